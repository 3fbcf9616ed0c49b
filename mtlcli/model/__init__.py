"""The model stage: the Keras network, its architectures and losses, and the multi-task train step.

Only the train step imports :mod:`mtlcli.weighting`.
"""
