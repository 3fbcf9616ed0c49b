"""Golden values of the official Auto-Lambda code (https://github.com/lorenmt/auto-lambda, its
``auto_lambda.py`` unmodified) on a PyTorch copy of mtl's tiny model, generated once.

The model: conftest's tiny recipe with ``{auto_lambda: {lr: 0.01, weight_init: 0.3}}`` (hard sharing,
``Dense(16, relu)``; ``kind`` 3 logits, ``flag`` ``Dense(8, relu)`` + 1 logit, ``value`` 1 output), its
weights drawn with ``np.random.default_rng(7)`` (``N(0, 0.5)``, in ``shared_variables + head_variables``
order; Keras's own initialisation differs between processes), two steps of the official trainer loop
(``trainer_dense.py``: the meta step with ``alpha`` = the learning rate, Adam on the weights, then plain
SGD at 0.1 on ``Σ λ_i L_i``) on training rows 0-31 and 32-63 with validation rows 0-14 and 15-29. Only
``model_fit`` (the losses) is written for the copy: mtl's masked means of cross-entropy, binary
cross-entropy with logits and squared error. ``LAMBDAS``: the weights after each meta step;
``CHANGE_NORMS``: each variable's ``||θ_2 - θ_0||`` after the two steps.

Generated with two scripts: ``export.py`` (mtl's venv: the weights, batches and masks to an npz)::

    import sys; sys.path.insert(0, '/work/main')
    import numpy as np, tensorflow as tf
    from pathlib import Path
    from tests.conftest import TINY_RECIPE, write_tiny_csv
    from mtlcli import data, recipe as R
    from mtlcli.model.build import build_model
    d = Path('/tmp/h4/golden'); d.mkdir(exist_ok=True); write_tiny_csv(d / 'tiny.csv')
    text = TINY_RECIPE.replace("weighting: static", "weighting: {auto_lambda: {lr: 0.01, weight_init: 0.3}}")
    loaded = R.loads(text, file="r.yaml", base_dir=d)
    prepared = data.prepare(loaded)
    m = build_model(loaded, prepared, seed=3)
    rng = np.random.default_rng(7)  # the weights: Keras's initialisation differs between processes
    for v in m.shared_variables + m.head_variables:
        v.assign(rng.normal(0.0, 0.5, v.shape).astype(np.float32))
    tr, va = prepared.splits['train'], prepared.splits['validation']
    def joined(split, a, b):
        return np.concatenate([np.asarray(split.x[k])[a:b].reshape(b - a, -1) for k in m.input_names], 1)
    out = {}
    for name, split, rng in (('t0', tr, (0, 32)), ('t1', tr, (32, 64)), ('v0', va, (0, 15)), ('v1', va, (15, 30))):
        out[name + '_x'] = joined(split, *rng)
        for t in m.task_names:
            out[f'{name}_y_{t}'] = np.asarray(split.y[t])[rng[0]:rng[1]]
            out[f'{name}_m_{t}'] = np.asarray(split.mask[t])[rng[0]:rng[1]]
    for v in m.shared_variables + m.head_variables:
        out['w_' + v.path.split('/', 1)[1].replace('/', '.')] = v.numpy()
    np.savez('/tmp/h4/golden/export.npz', **out)

and ``run.py`` (``/tmp/tjd/bin/python``, PyTorch 2.13 float64, with the official ``auto_lambda.py``
next to it and a one-line ``utils.py``: ``import torch``)::

    # The official Auto-Lambda class (lorenmt/auto-lambda, auto_lambda.py, unmodified) on a torch copy of the
    # mtl tiny model (hard sharing: Dense(16, relu) trunk; kind: Dense(3) logits; flag: Dense(8, relu) +
    # Dense(1) logit; value: Dense(1)), with the Keras weights and batches exported by export.py; only
    # model_fit is given (mtl's masked mean losses). Two steps of the official trainer loop (trainer_dense.py):
    # meta_optimizer.zero_grad(); unrolled_backward(...); meta_optimizer.step(); then SGD on sum(w_i L_i).
    import sys
    sys.path.insert(0, "/tmp/h4/official")
    import numpy as np, torch
    import torch.nn.functional as F
    from auto_lambda import AutoLambda
    torch.set_default_dtype(torch.float64)
    D = np.load("/tmp/h4/golden/export.npz")
    TASKS = ["kind", "flag", "value"]
    LR, META_LR, INIT = 0.1, 0.01, 0.3

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.shared = torch.nn.Linear(6, 16); self.kind = torch.nn.Linear(16, 3)
            self.flag_hidden = torch.nn.Linear(16, 8); self.flag = torch.nn.Linear(8, 1); self.value = torch.nn.Linear(16, 1)
            for layer, key in ((self.shared, "shared_0"), (self.kind, "kind_output"), (self.flag_hidden, "flag_hidden_0"),
                               (self.flag, "flag_output"), (self.value, "value_output")):
                layer.weight.data = torch.tensor(np.ascontiguousarray(D[f"w_{key}.kernel"].T), dtype=torch.float64)
                layer.bias.data = torch.tensor(D[f"w_{key}.bias"], dtype=torch.float64)
        def forward(self, x):
            z = torch.relu(self.shared(x))
            return [self.kind(z), self.flag(torch.relu(self.flag_hidden(z))), self.value(z)]

    def batch(name):
        x = torch.tensor(D[f"{name}_x"], dtype=torch.float64)
        y = {t: torch.tensor(D[f"{name}_y_{t}"]) for t in TASKS}
        y.update({f"m_{t}": torch.tensor(D[f"{name}_m_{t}"], dtype=torch.float64).reshape(-1) for t in TASKS})
        return x, y

    class Official(AutoLambda):
        def model_fit(self, pred, targets):
            per = [F.cross_entropy(pred[0], targets["kind"].long().reshape(-1), reduction="none"),
                   F.binary_cross_entropy_with_logits(pred[1].reshape(-1), targets["flag"].double().reshape(-1), reduction="none"),
                   (pred[2].reshape(-1) - targets["value"].double().reshape(-1)) ** 2]
            return [(l * targets[f"m_{t}"]).sum() / targets[f"m_{t}"].sum() for l, t in zip(per, TASKS)]

    model = Net()
    start = [p.detach().clone() for p in model.parameters()]
    autol = Official(model, "cpu", TASKS, TASKS, INIT)
    meta_optimizer = torch.optim.Adam([autol.meta_weights], lr=META_LR)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    lambdas = []
    for step in range(2):
        (x, y), (xv, yv) = batch(f"t{step}"), batch(f"v{step}")
        meta_optimizer.zero_grad()
        autol.unrolled_backward(x, y, xv, yv, LR, optimizer)
        meta_optimizer.step()
        lambdas.append([float(v) for v in autol.meta_weights.detach()])
        optimizer.zero_grad()
        loss = sum(w * l for w, l in zip(autol.meta_weights, autol.model_fit(model(x), y)))
        loss.backward()
        optimizer.step()
    print("LAMBDAS =", lambdas)
    names = ["shared_0.kernel", "shared_0.bias", "kind_output.kernel", "kind_output.bias", "flag_hidden_0.kernel",
             "flag_hidden_0.bias", "flag_output.kernel", "flag_output.bias", "value_output.kernel", "value_output.bias"]
    order = [model.shared.weight, model.shared.bias, model.kind.weight, model.kind.bias, model.flag_hidden.weight,
             model.flag_hidden.bias, model.flag.weight, model.flag.bias, model.value.weight, model.value.bias]
    s0 = dict(zip([id(p) for p in model.parameters()], start))
    print("CHANGE_NORMS =", {n: float((p.detach() - s0[id(p)]).norm()) for n, p in zip(names, order)})
"""

# fmt: off
LAMBDAS = [[0.30999999857195487, 0.30999999602083395, 0.3099999999051074], [0.3187728108549483, 0.31947068183109223, 0.319753568810114]]  # noqa: E501
CHANGE_NORMS = {'shared_0.kernel': 0.12925249606377032, 'shared_0.bias': 0.08056454857330585, 'kind_output.kernel': 0.07503927828653666, 'kind_output.bias': 0.03162266288079775, 'flag_hidden_0.kernel': 0.026246907136360343, 'flag_hidden_0.bias': 0.006368135875261085, 'flag_output.kernel': 0.018765213564079685, 'flag_output.bias': 0.007146175739117189, 'value_output.kernel': 0.2101249630804388, 'value_output.bias': 0.05428343066867791}  # noqa: E501
# fmt: on
