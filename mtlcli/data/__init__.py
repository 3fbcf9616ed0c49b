"""The data stage: read sources, split, compute statistics in chunks, transform, and build tf.data datasets.

Nothing here imports the model or run stages. ``penguins.csv`` (the demo data) ships in this folder.
"""
