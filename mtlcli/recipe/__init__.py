"""The recipe stage: YAML with line numbers, the pydantic schema and every check made before data is read.

Nothing here imports TensorFlow or the data stage.
"""
