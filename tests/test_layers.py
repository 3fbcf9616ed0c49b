"""The recipe layer table (checked without TensorFlow) matches the installed Keras."""

from __future__ import annotations

from mtlcli.recipe import layer_table


def test_table_is_current():
    assert layer_table.generate() == layer_table.table(), (
        "mtlcli/keras_layers.json is out of date: run `python -m mtlcli.recipe.layer_table`"
    )


def test_table_covers_the_documented_layers_and_excludes_code():
    table = layer_table.table()
    for name in [
        "dense",
        "dropout",
        "batch_normalization",
        "layer_normalization",
        "conv1d",
        "conv2d",
        "max_pooling2d",
        "average_pooling2d",
        "global_average_pooling2d",
        "global_max_pooling1d",
        "flatten",
        "reshape",
        "embedding",
        "relu",
    ]:
        assert name in table, name
    assert "lambda" not in table and "tfsm_layer" not in table
    assert table["dense"]["required"] == ["units"]
