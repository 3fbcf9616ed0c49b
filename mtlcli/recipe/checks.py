"""Checks the schema cannot express: names of layers, losses, metrics, strategies, monitors, task graphs.

Each check reads the raw YAML mapping (so it can run even where pydantic already found a problem) and
returns :class:`~mtlcli.errors.Problem` s with the recipe path and line. The data keys are checked in
:mod:`mtlcli.recipe.data_checks`, strategies by :func:`mtlcli.weighting.registry.check`.
"""

from __future__ import annotations

import math
import re

from mtlcli.errors import Problem, did_you_mean
from mtlcli.recipe import layer_table
from mtlcli.recipe.data_checks import data_problems, validation_problems
from mtlcli.recipe.encoder_checks import encoder_problems
from mtlcli.recipe.init_checks import init_from_problems
from mtlcli.recipe.layer_args import argument_problem
from mtlcli.recipe.spec import (
    ARCHITECTURES,
    DEFAULT_METRICS,
    EXPERT_ARCHITECTURES,
    LOSSES,
    METRICS,
    NAME_RE,
    TASK_TYPES,
)
from mtlcli.recipe.yamlio import Located, describe
from mtlcli.weighting.registry import PRIMARY, REGISTRY
from mtlcli.weighting.registry import check as check_weighting


def _adder(out: list[Problem], src: Located):
    """``add(message, path)``: append a problem placed at ``path``'s line of ``src``."""

    def add(message: str, path: tuple) -> None:
        out.append(src.problem(message, path))

    return add


def recipe_problems(data: dict, src: Located) -> list[Problem]:
    """Every problem of a recipe mapping that the schema alone does not find."""
    out: list[Problem] = []
    add = _adder(out, src)
    name = data.get("name")
    if isinstance(name, str) and not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", name):
        add(f"expected a run name of letters, digits, '_', '-' or '.', received {name!r}", ("name",))
    _non_finite_problems(data, (), add)
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    tasks = model.get("tasks") if isinstance(model.get("tasks"), dict) else None
    out.extend(_model_problems(model, src))
    data_spec = data.get("data") if isinstance(data.get("data"), dict) else {}
    _fraction_problems(data_spec, add)
    out.extend(data_problems(data_spec, tasks or {}, src))
    out.extend(encoder_problems(model, data_spec, src))
    train = data.get("train") if isinstance(data.get("train"), dict) else {}
    _train_problems(train, tasks, add)
    validation_problems(train, data_spec, add)
    out.extend(init_from_problems(model, data_spec, train, src))
    return out


def _non_finite_problems(value, path: tuple, add) -> None:
    """``.inf``, ``.nan`` or a number too large for a float (``1e400``) anywhere in the recipe."""
    if isinstance(value, float) and not math.isfinite(value):
        add(f"expected a finite number, received {describe(value)}", path)
    elif isinstance(value, dict):
        for key, item in value.items():
            _non_finite_problems(item, (*path, key), add)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _non_finite_problems(item, (*path, i), add)


def _all_weights_zero(tasks: dict) -> bool:
    """True when every task's weight is written as 0 (the default weight is 1)."""
    weights = [spec.get("weight", 1.0) if isinstance(spec, dict) else None for spec in tasks.values()]
    return bool(weights) and all(
        isinstance(w, (int, float)) and not isinstance(w, bool) and w == 0 for w in weights
    )


def _model_problems(model: dict, src: Located) -> list[Problem]:
    """``model.shared``, each task (name, layers, loss, metrics), the weights and the architecture."""
    out: list[Problem] = []
    add = _adder(out, src)
    shared = model.get("shared")
    if isinstance(shared, list):
        out.extend(layer_problems(shared, ("model", "shared"), src))
    encoders = model.get("encoders")
    for name, layers in encoders.items() if isinstance(encoders, dict) else ():
        if isinstance(layers, list):
            out.extend(layer_problems(layers, ("model", "encoders", name), src))
    tasks = model.get("tasks")
    if isinstance(tasks, dict):  # any other type: pydantic reports it
        if not tasks:
            add("expected at least one task", ("model", "tasks"))
        for task, spec in tasks.items():
            if not NAME_RE.match(str(task)):
                add(
                    f"task names must start with a letter and use letters, digits and '_', received {task!r}",
                    ("model", "tasks", task),
                )
            if isinstance(spec, dict):
                out.extend(_task_problems(str(task), spec, src))
        if _all_weights_zero(tasks):
            add(
                "every task has weight 0, so the run would train nothing: expected at least one task "
                "with a weight > 0",
                ("model", "tasks"),
            )
    out.extend(architecture_problems(model, src))
    return out


def _fraction_problems(data_spec: dict, add) -> None:
    """``data.validation`` / ``data.test`` given as numbers must be fractions in (0, 1)."""
    for key in ("validation", "test"):
        value = data_spec.get(key)
        if isinstance(value, bool):
            add(
                f"expected a fraction between 0 and 1 (exclusive) or a path, received a boolean "
                f"({str(value).lower()})",
                ("data", key),
            )
        elif isinstance(value, float | int) and not 0 < value < 1:
            add(
                f"expected a fraction between 0 and 1 (exclusive) or a path, received {value!r}",
                ("data", key),
            )


def _train_problems(train: dict, tasks: dict | None, add) -> None:
    """``train``: the strategy and its parameters, distribution options, the early-stopping monitor."""
    if "weighting" in train:
        num_tasks = len(tasks) if isinstance(tasks, dict) and tasks else None
        for problem in check_weighting(train["weighting"], num_tasks):
            add(problem.message, ("train", "weighting", *problem.path))
    _primary_problems(train, tasks, add)
    if train.get("devices") is not None and train.get("distribute", "none") in ("none", None):
        add(
            "devices applies to distributed training only: expected train.distribute mirrored or "
            "multi_worker, received none",
            ("train", "devices"),
        )
    if train.get("on_nan") == "skip_batch" and train.get("distribute") in ("mirrored", "multi_worker"):
        add(
            f"skip_batch is not available with train.distribute {train['distribute']} (the replicas' "
            f"update cannot be skipped conditionally): expected stop",
            ("train", "on_nan"),
        )
    stopping = train.get("early_stopping")
    if isinstance(stopping, dict) and isinstance(stopping.get("monitor"), str) and tasks is not None:
        names = monitor_names(tasks)
        if stopping["monitor"] not in names:
            add(
                f"unknown metric {stopping['monitor']!r}{did_you_mean(stopping['monitor'], names)} "
                f"(available: {', '.join(names)})",
                ("train", "early_stopping", "monitor"),
            )


def _primary_problems(train: dict, tasks: dict | None, add) -> None:
    """``train.primary`` names a task; a strategy that needs a primary task (PCD) gets it from there
    only: without ``train.primary`` it is refused, and its own ``primary`` field is not written."""
    primary = train.get("primary")
    names = [str(t) for t in tasks] if isinstance(tasks, dict) else []
    if isinstance(primary, str) and names and primary not in names:
        add(
            f"unknown task {primary!r}{did_you_mean(primary, names)} (tasks: {', '.join(names)})",
            ("train", "primary"),
        )
    spec = train.get("weighting", "static")
    if isinstance(spec, dict) and len(spec) == 1:
        ((name, params),) = spec.items()
    else:
        name, params = spec, None
    cls = REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None or not cls.needs_primary:
        return
    if isinstance(params, dict) and PRIMARY in params:
        add(
            f"{name}'s primary task comes from train.primary (a task name), not from a {PRIMARY} "
            f"parameter: remove it and write train.primary: {names[0] if names else '<task>'}",
            ("train", "weighting", name, PRIMARY),
        )
    elif primary is None:
        example = names[0] if names else "<task>"
        add(
            f"{name} needs a primary task: add primary: <task> under train (e.g. train.primary: "
            f"{example}; tasks: {', '.join(names) or 'none'})",
            ("train", "weighting"),
        )


#: what ``inputs_from`` reads of another task besides its output: ``click.hidden`` is click's last hidden
#: layer (the input of its output layer)
DEPENDENCY_LAYERS = ("hidden",)


def dependencies(inputs_from: list[str] | None) -> list[tuple[str, str]]:
    """``["click", "view.hidden"]`` -> ``[("click", "output"), ("view", "hidden")]`` (the recipe check
    has refused anything else)."""
    out = []
    for dep in inputs_from or []:
        task, _, layer = str(dep).partition(".")
        out.append((task, layer or "output"))
    return out


def architecture_problems(model: dict, src: Located) -> list[Problem]:
    """``model.architecture`` with the keys it uses (experts, task_experts, levels) and ``inputs_from``."""
    out: list[Problem] = []
    arch = model.get("architecture", "hard_sharing")
    if isinstance(arch, str) and arch in ARCHITECTURES:  # else pydantic reports it
        out.extend(_architecture_key_problems(arch, model, src))
    experts = model.get("experts")
    if isinstance(experts, dict) and isinstance(experts.get("layers"), list):
        if not experts["layers"]:
            _adder(out, src)("expected at least one layer in each expert", ("model", "experts", "layers"))
        out.extend(layer_problems(experts["layers"], ("model", "experts", "layers"), src))
    tasks = model.get("tasks") if isinstance(model.get("tasks"), dict) else {}
    out.extend(_inputs_from_problems(tasks, src))
    out.extend(_product_problems(tasks, src))
    return out


def _product_problems(tasks: dict, src: Located) -> list[Problem]:
    """ESMM's ``product_of``: at least two other binary tasks, each once, no cycle, and no layers (nor
    readers through ``inputs_from``) on the product task."""
    out: list[Problem] = []
    add = _adder(out, src)
    specs = {t: s for t, s in tasks.items() if isinstance(s, dict)}
    products = {t: s["product_of"] for t, s in specs.items() if isinstance(s.get("product_of"), list)}
    graph: dict[str, list[str]] = {}
    for task, factors in products.items():
        if not factors:
            continue
        base = ("model", "tasks", task)
        spec = specs[task]
        if spec.get("type") in TASK_TYPES and spec["type"] != "binary":
            add(
                f"a task with product_of is binary (its probability is the product of its factors'), "
                f"received type {spec['type']}",
                (*base, "type"),
            )
        for key in ("head", "output", "inputs_from"):
            if spec.get(key):
                add(f"a task with product_of has no layers of its own: remove {key}", (*base, key))
        if len(factors) < 2:
            add(f"expected at least two tasks in product_of, received {len(factors)}", (*base, "product_of"))
        graph[task] = []
        for i, name in enumerate(factors):
            problem = _factor_problem(task, name, specs, graph[task])
            if problem:
                add(problem, (*base, "product_of", i))
            else:
                graph[task].append(name)
    for cycle in _cycles(graph):
        add(
            f"tasks are products of each other in a cycle: {' -> '.join(cycle)}", ("model", "tasks", cycle[0])
        )
    for task, spec in specs.items():
        for i, dep in enumerate(spec.get("inputs_from") if isinstance(spec.get("inputs_from"), list) else []):
            name = str(dep).partition(".")[0]
            if name in products and products[name] and name != task:
                add(
                    f"{name!r} is a product of other tasks and has no layers to read: read its factors "
                    f"({', '.join(map(str, products[name]))}) instead",
                    ("model", "tasks", task, "inputs_from", i),
                )
    return out


def _factor_problem(task: str, name, specs: dict, listed: list) -> str | None:
    """What is wrong with one ``product_of`` entry of ``task``, or None."""
    if not isinstance(name, str):
        return None  # pydantic reports the type
    if name == task:
        return f"task {task!r} cannot be a product of itself"
    if name not in specs:
        others = [t for t in specs if t != task]
        return f"unknown task {name!r}{did_you_mean(name, others)} (tasks: {', '.join(map(str, specs))})"
    if name in listed:
        return f"task {name!r} is listed twice"
    ftype = specs[name].get("type")
    if ftype in TASK_TYPES and ftype != "binary":
        return f"product_of multiplies binary tasks' probabilities: {name!r} is a {ftype} task"
    return None


def _architecture_key_problems(arch: str, model: dict, src: Located) -> list[Problem]:
    """The keys an architecture needs (``experts``) or ignores (``levels`` outside ple, ...)."""
    out: list[Problem] = []
    add = _adder(out, src)
    tasks = model.get("tasks") if isinstance(model.get("tasks"), dict) else {}
    if arch in EXPERT_ARCHITECTURES and model.get("experts") is None:
        add(
            f"the {arch} architecture needs model.experts, e.g. "
            f"experts: {{count: 4, layers: [{{dense: {{units: 64, activation: relu}}}}]}}",
            ("model", "architecture"),
        )
    if arch not in EXPERT_ARCHITECTURES and "experts" in model:
        add(
            f"experts apply to the mmoe, cgc and ple architectures only; the architecture is {arch!r}",
            ("model", "experts"),
        )
    if arch not in ("cgc", "ple") and "task_experts" in model:
        add(
            f"task_experts applies to the cgc and ple architectures only; the architecture is {arch!r}",
            ("model", "task_experts"),
        )
    _gate_problems(arch, model, add)
    _aitm_problems(arch, model, add)
    if arch != "ple" and "levels" in model:
        add(f"levels applies to the ple architecture only; the architecture is {arch!r}", ("model", "levels"))
    if arch == "cross_stitch":
        if not model.get("shared"):
            where = ("model", "shared") if "shared" in model else ("model", "architecture")
            out.append(
                Problem(
                    "cross_stitch replicates model.shared once per task: expected at least one layer",
                    "model.shared",
                    src.file,
                    src.line(where),
                )
            )
        if len(tasks) == 1:
            add(
                "cross_stitch mixes one column per task: expected at least two tasks, received 1",
                ("model", "tasks"),
            )
    return out


def _aitm_problems(arch: str, model: dict, add) -> None:
    """``model.aitm``: only with the aitm architecture, which needs it; ``order`` names at least two
    existing binary tasks with layers of their own (not ESMM products), each once."""
    if arch != "aitm":
        if "aitm" in model:
            add(
                f"aitm applies to the aitm architecture only; the architecture is {arch!r}", ("model", "aitm")
            )
        return
    spec = model.get("aitm")
    if not isinstance(spec, dict) or "order" not in spec:
        if spec is None:
            add(
                "the aitm architecture needs model.aitm, e.g. aitm: {order: [click, purchase]}",
                ("model", "architecture"),
            )
        return  # else pydantic reports the shape
    order = spec["order"] if isinstance(spec["order"], list) else []
    if isinstance(spec["order"], list) and len(order) < 2:
        add(f"expected at least two tasks in aitm.order, received {len(order)}", ("model", "aitm", "order"))
    tasks = model.get("tasks") if isinstance(model.get("tasks"), dict) else {}
    seen: list[str] = []
    for i, name in enumerate(order):
        if not isinstance(name, str):
            continue  # pydantic reports the type
        where = ("model", "aitm", "order", i)
        task = tasks.get(name)
        if name not in tasks:
            add(f"unknown task {name!r}{did_you_mean(name, list(tasks))} (tasks: {', '.join(tasks)})", where)
        elif name in seen:
            add(f"task {name!r} is listed twice in aitm.order", where)
        elif isinstance(task, dict) and task.get("type") in TASK_TYPES and task["type"] != "binary":
            add(
                f"aitm.order holds binary tasks (click -> purchase): {name!r} is a {task['type']} task", where
            )
        elif isinstance(task, dict) and task.get("product_of"):
            add(f"{name!r} is a product of other tasks and has no tower: aitm.order needs towers", where)
        seen.append(name)
    for i, name in enumerate(seen):
        reads = tasks.get(name, {}).get("inputs_from") if isinstance(tasks.get(name), dict) else None
        later = [d for d, _ in dependencies(reads if isinstance(reads, list) else []) if d in seen[i + 1 :]]
        if later:
            add(
                f"task {name!r} reads {later[0]!r} through inputs_from, so it cannot come before it in "
                "aitm.order (information flows along the order)",
                ("model", "aitm", "order", i),
            )


def _gate_problems(arch: str, model: dict, add) -> None:
    """``model.gate``: only with experts, and DSelect-k's ``k`` at most the experts a task's gate mixes."""
    if "gate" not in model:
        return
    if arch not in EXPERT_ARCHITECTURES:
        add(
            f"gate applies to the mmoe, cgc and ple architectures only; the architecture is {arch!r}",
            ("model", "gate"),
        )
        return
    gate, experts = model.get("gate"), model.get("experts")
    dselect = gate.get("dselect_k") if isinstance(gate, dict) else None
    k = dselect.get("k") if isinstance(dselect, dict) else None
    count = experts.get("count", 4) if isinstance(experts, dict) else None
    own = model.get("task_experts", 1) if arch != "mmoe" else 0
    if isinstance(k, int) and isinstance(count, int) and isinstance(own, int) and k > count + own:
        add(
            f"dselect_k selects k of the {count + own} experts a task's gate mixes: expected k <= "
            f"{count + own}, received {k}",
            ("model", "gate", "dselect_k", "k"),
        )


def _inputs_from_problems(tasks: dict, src: Located) -> list[Problem]:
    """Each ``inputs_from`` entry names another task (or its ``.hidden`` layer) once, with no cycle."""
    out: list[Problem] = []
    add = _adder(out, src)
    graph: dict[str, list[str]] = {}
    for task, spec in tasks.items():
        deps = spec.get("inputs_from") if isinstance(spec, dict) else None
        if not isinstance(deps, list):
            continue
        graph[task], listed = [], set()
        for i, dep in enumerate(deps):
            if not isinstance(dep, str):
                continue  # pydantic reports the type
            problem = _dependency_problem(task, dep, tasks, listed)
            if problem:
                add(problem, ("model", "tasks", task, "inputs_from", i))
                continue
            name, _, layer = dep.partition(".")
            listed.add((name, layer))
            if name not in graph[task]:
                graph[task].append(name)
    for cycle in _cycles(graph):
        add(
            f"tasks read each other's outputs in a cycle: {' -> '.join(cycle)}",
            ("model", "tasks", cycle[0], "inputs_from"),
        )
    return out


def _dependency_problem(task: str, dep: str, tasks: dict, listed: set) -> str | None:
    """What is wrong with one ``inputs_from`` entry of ``task``, or None."""
    name, dot, layer = dep.partition(".")
    if name == task:
        return f"task {task!r} cannot read its own {'hidden layer' if dot else 'output'}"
    if name not in tasks:
        others = [t for t in tasks if t != task]
        return f"unknown task {name!r}{did_you_mean(name, others)} (tasks: {', '.join(map(str, tasks))})"
    if dot and layer not in DEPENDENCY_LAYERS:
        return (
            f"expected {name} (its output) or {name}.hidden (its last hidden layer), received "
            f"{dep!r}{did_you_mean(dep, [f'{name}.{x}' for x in DEPENDENCY_LAYERS])}"
        )
    if (name, layer) in listed:
        return f"task {name!r} is listed twice" if not dot else f"{dep!r} is listed twice"
    return None


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Each cycle of ``task -> tasks it reads`` once, as ``[a, b, a]`` starting at its first task."""
    found: list[list[str]] = []
    seen_sets: set[frozenset] = set()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        path.append(node)
        for dep in graph.get(node, []):
            if state.get(dep) == 1:
                cycle = path[path.index(dep) :]
                if frozenset(cycle) not in seen_sets:
                    seen_sets.add(frozenset(cycle))
                    found.append([*cycle, dep])
            elif state.get(dep) is None:
                visit(dep, path)
        path.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])
    return found


def _task_problems(task: str, spec: dict, src: Located) -> list[Problem]:
    """One task's layers, loss and metrics against its type (names from the tables in spec)."""
    out: list[Problem] = []
    base = ("model", "tasks", task)
    add = _adder(out, src)

    ttype = spec.get("type")
    if isinstance(spec.get("head"), list):
        out.extend(layer_problems(spec["head"], (*base, "head"), src))
    if isinstance(spec.get("output"), dict):
        out.extend(layer_problems([spec["output"]], (*base, "output"), src, single=True))
    if ttype not in TASK_TYPES:
        return out
    loss = spec.get("loss")
    if isinstance(loss, str):
        fits = [name for name, types in LOSSES.items() if ttype in types]
        if loss not in LOSSES:
            add(
                f"unknown loss {loss!r}{did_you_mean(loss, LOSSES)} (for {ttype}: {', '.join(fits)})",
                (*base, "loss"),
            )
        elif ttype not in LOSSES[loss]:
            add(
                f"loss {loss!r} does not fit a {ttype} task; expected one of {', '.join(fits)}",
                (*base, "loss"),
            )
    metrics = spec.get("metrics")
    if isinstance(metrics, list):
        fits = [name for name, (types, _) in METRICS.items() if ttype in types]
        for i, metric in enumerate(metrics):
            if not isinstance(metric, str):
                continue
            if metric not in METRICS:
                add(
                    f"unknown metric {metric!r}{did_you_mean(metric, METRICS)} (for {ttype}: {', '.join(fits)})",
                    (*base, "metrics", i),
                )
            elif ttype not in METRICS[metric][0]:
                add(
                    f"metric {metric!r} does not fit a {ttype} task; expected one of {', '.join(fits)}",
                    (*base, "metrics", i),
                )
        if len(set(m for m in metrics if isinstance(m, str))) != len(metrics):
            add("a metric is listed twice", (*base, "metrics"))
    if ttype == "binary" and isinstance(spec.get("classes"), int) and spec["classes"] != 2:
        add(f"a binary task has 2 classes, received classes: {spec['classes']}", (*base, "classes"))
    return out


def layer_problems(layers: list, path: tuple, src: Located, single: bool = False) -> list[Problem]:
    """Check ``[{dense: {units: 8}}, ...]`` against the Keras layer table (no TensorFlow)."""
    out: list[Problem] = []
    known = layer_table.table()
    for i, item in enumerate(layers):
        at = path if single else (*path, i)

        def add(message: str, where: tuple = at) -> None:
            out.append(src.problem(message, where))

        if isinstance(item, str):
            item = {item: {}}
        if not isinstance(item, dict) or len(item) != 1:
            add(
                f"expected one layer written as {{name: {{arguments}}}}, e.g. {{dense: {{units: 32}}}}; "
                f"received {describe(item)}"
            )
            continue
        ((name, kwargs),) = item.items()
        if name not in known:
            hint = did_you_mean(name, known)
            if name == "lambda":
                hint = "; Lambda layers are not allowed (they would run code from a recipe)"
            add(f"unknown layer {name!r}{hint}", (*at, name))
            continue
        if kwargs is None:
            kwargs = {}
        if not isinstance(kwargs, dict):
            add(f"expected the layer's arguments as a mapping, received {describe(kwargs)}", (*at, name))
            continue
        params = known[name]["params"]
        for key, value in kwargs.items():
            if key not in params:
                add(
                    f"{known[name]['class']} has no argument {key!r}{did_you_mean(key, params)}",
                    (*at, name, key),
                )
            elif problem := argument_problem(name, key, value):
                add(f"{known[name]['class']} {key}: {problem}", (*at, name, key))
        for key in known[name]["required"]:
            if key not in kwargs:
                add(f"{known[name]['class']} needs the argument {key!r}", (*at, name))
    return out


def monitor_names(tasks: dict) -> list[str]:
    """Every metric name training logs for ``tasks`` (usable as ``early_stopping.monitor``)."""
    names = ["loss"]
    for task, spec in tasks.items():
        names.append(f"{task}_loss")
        ttype = spec.get("type") if isinstance(spec, dict) else getattr(spec, "type", None)
        metrics = spec.get("metrics") if isinstance(spec, dict) else getattr(spec, "metrics", None)
        if metrics is None:
            metrics = DEFAULT_METRICS.get(ttype, [])
        names.extend(f"{task}_{m}" for m in metrics if isinstance(m, str) and m in METRICS)
    return names + [f"val_{n}" for n in names]


def monitor_mode(name: str) -> str:
    """``min`` or ``max`` for a logged metric name (Keras cannot infer it for per-task names)."""
    for metric, (_, direction) in METRICS.items():
        if name.endswith(f"_{metric}") and not name.endswith("_loss"):
            return direction
    return "min"
