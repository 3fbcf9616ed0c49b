"""``keras_names.json`` (activation, initializer, regularizer, constraint names) matches the installed Keras."""

from mtlcli.recipe import layer_table


def test_names_table_is_current():
    assert layer_table.generate_names() == layer_table.names(), (
        "mtlcli/recipe/keras_names.json is out of date: run `python -m mtlcli.recipe.layer_table`"
    )


def test_every_name_resolves_in_keras():
    import keras

    getters = {
        "activation": keras.activations.get,
        "initializer": keras.initializers.get,
        "regularizer": keras.regularizers.get,
        "constraint": keras.constraints.get,
    }
    for kind, names in layer_table.names().items():
        for name in names:
            assert getters[kind](name) is not None, (kind, name)
