"""Collect features from any module of a network with forward hooks and measure them.

The network is run twice over the loader in eval mode without gradients (pass 1: class means;
pass 2: centred statistics), so memory stays O(K d) per layer whatever the dataset size, plus
each accumulator's fixed stage for small batches (2^20 values; see
:class:`~nclab.metrics.accumulators._Accumulator`); no feature matrix is stored. Outputs of
convolutional layers are flattened per sample.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from nclab.errors import InputRuntimeError, InputTypeError
from nclab.metrics.accumulators import ClassMeans, CollapseAccumulator
from nclab.metrics.options import MetricOptions
from nclab.metrics.report import CollapseReport
from nclab.progress import progress_bar

__all__ = ["Captured", "capture", "collect", "find_classifier", "resolve_layers"]


def find_classifier(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """The last ``nn.Linear`` registered in ``model`` (its usual classifier), or None."""
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found = (name, module)
    return found


def resolve_layers(model: nn.Module, layers: Sequence[str]) -> dict[str, nn.Module]:
    """The modules named in ``layers``; an error lists the valid names."""
    if isinstance(layers, str) or not layers:
        raise InputTypeError(
            "layers: expected a non-empty list of module names, e.g. ['layer4', 'fc']"
        )
    modules = dict(model.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        valid = [n for n in modules if n]
        raise ValueError(f"layers: {missing} not found in the model; valid module names: {valid}")
    return {name: modules[name] for name in layers}


def _resolve_classifier(model: nn.Module, classifier: str | None) -> nn.Linear | None:
    if classifier is None:
        return None
    if classifier == "auto":
        found = find_classifier(model)
        return found[1] if found else None
    modules = dict(model.named_modules())
    module = modules.get(classifier)
    if not isinstance(module, nn.Linear):
        linear = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
        raise ValueError(
            f"classifier: {classifier!r} is not an nn.Linear module of the model; linear modules: {linear}"
        )
    return module


class Captured(Mapping[str, torch.Tensor]):
    """The latest output of each hooked module, detached and flattened to (batch, features).

    Reading an output checks that nothing modified it in place after its module returned it (a
    later ``out += identity`` or ``ReLU(inplace=True)`` in the forward pass would otherwise
    turn it silently into another layer's output): the check compares the tensor's version
    counter with the one it had in the hook, and raises naming the module.
    """

    def __init__(self) -> None:
        self._outputs: dict[str, tuple[torch.Tensor, int | None]] = {}
        self._calls: dict[str, int] | None = None

    def new_pass(self) -> None:
        """Mark the start of a forward pass: reading an output of a module that has run more
        than once since then raises (a shared module, such as the ReLU that torchvision's
        ResNet blocks call twice, keeps only its last output)."""
        self._calls = {}

    def _set(self, name: str, output: torch.Tensor, copy: bool) -> None:
        if self._calls is not None:
            self._calls[name] = self._calls.get(name, 0) + 1
        flat = output.detach().flatten(1)
        if copy:
            self._outputs[name] = (flat.clone(), None)
        else:
            self._outputs[name] = (flat, None if flat.is_inference() else flat._version)

    def __getitem__(self, name: str) -> torch.Tensor:
        calls = self._calls.get(name, 0) if self._calls is not None else 1
        if calls > 1:
            raise InputRuntimeError(
                f"layers: module {name!r} ran {calls} times in one forward pass (a module "
                "shared within the network); only its last output would be measured: track a "
                "module that runs once"
            )
        tensor, version = self._outputs[name]
        if version is not None and tensor._version != version:
            raise InputRuntimeError(
                f"layers: the output of module {name!r} was modified in place later in the "
                "forward pass (e.g. by `out += identity` or ReLU(inplace=True)), so it is no "
                "longer that module's output; capture with copy=True, or track a module whose "
                "output is left alone"
            )
        return tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self._outputs)

    def __len__(self) -> int:
        return len(self._outputs)


@contextmanager
def capture(model: nn.Module, layers: Sequence[str], *, copy: bool = False) -> Iterator[Captured]:
    """Within the block, ``captured[name]`` is the latest output of each named module, detached
    and flattened to (batch, features); the hooks are removed on exit. A module called several
    times in one forward pass (a shared activation module, say) keeps its last call's output:
    track a module that is called once. With ``copy`` the hook stores a copy of the output (safe
    when later operations modify it in place); without, reading an output that was modified in
    place raises (see :class:`Captured`; outputs of tensors made under ``torch.inference_mode``
    have no version counter and are not checked)."""
    named = resolve_layers(model, layers)
    captured = Captured()

    def hook_for(name: str) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                raise InputTypeError(
                    f"layers: module {name!r} returns {type(output).__name__}, not a tensor"
                )
            captured._set(name, output, copy)

        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in named.items()]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def _batches(loader: Iterable[Any], device: torch.device) -> Iterable[tuple[Any, torch.Tensor]]:
    for batch in loader:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise InputTypeError("loader: each batch must be an (inputs, labels, ...) tuple")
        yield batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)


def _len(loader: Iterable[Any]) -> int | None:
    return len(loader) if isinstance(loader, Sized) else None


def collect(
    model: nn.Module,
    loader: Iterable[Any],
    layers: Sequence[str],
    *,
    num_classes: int | None = None,
    classifier: str | None = "auto",
    device: torch.device | str | None = None,
    distributed: bool = False,
    progress: bool = False,
    **options: Any,
) -> dict[str, CollapseReport]:
    """Measure neural collapse of the outputs of named modules over a data loader.

    Parameters
    ----------
    model : the network; it is put in eval mode for the measurement and restored afterwards.
    loader : re-iterable of ``(inputs, labels, ...)`` batches (read twice; every batch counts).
    layers : module names (as in ``model.named_modules()``); each output is flattened to (B, d)
        and copied in its hook, so that a later in-place operation of the network (a residual
        ``out += identity``, ``ReLU(inplace=True)``) cannot change it.
    num_classes : K; default the classifier's ``out_features``.
    classifier : name of the ``nn.Linear`` classifier, ``"auto"`` (the last ``nn.Linear``; the
        default) or None. Its W, b are used for the weight/NC3/NC4 metrics of the *last* layer in
        ``layers``, whose width must equal the classifier's ``in_features``.
    device : where the model runs; default the device of its first parameter.
    distributed : all-reduce the accumulators over ``torch.distributed`` after each pass (each
        process passes its own shard of the data; the numbers equal a single-process run).
    progress : a progress bar over the batches of each pass (tqdm; a widget in notebooks).
    **options : metric options, see :class:`~nclab.metrics.options.MetricOptions`.

    Returns
    -------
    dict layer name -> CollapseReport, in the order of ``layers``.
    """
    opts = MetricOptions.from_kwargs(**options)
    # isinstance, not iter(loader) is loader: iter() of a DataLoader would start its workers.
    if isinstance(loader, Iterator):
        raise InputTypeError(
            "loader: an iterator (a generator, say) can be read only once, and collect reads "
            "the data twice; pass a list or a DataLoader"
        )
    named = resolve_layers(model, layers)
    linear = _resolve_classifier(model, classifier)
    if num_classes is None:
        if linear is None:
            raise ValueError(
                "num_classes: required when the model has no classifier to read K from"
            )
        num_classes = linear.out_features
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    dev = torch.device(device)

    def run(accumulators: dict[str, Any], captured: Captured, desc: str) -> None:
        for inputs, labels in progress_bar(_batches(loader, dev), progress, desc, _len(loader)):
            captured.new_pass()
            model(inputs)
            for name, acc in accumulators.items():
                acc.update(captured[name], labels)
        if distributed:
            for acc in accumulators.values():
                acc.all_reduce()

    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), capture(model, list(named), copy=True) as captured:
            means = {name: ClassMeans(num_classes) for name in named}
            run(means, captured, "collect: pass 1 of 2")
            last = list(named)[-1]
            centred: dict[str, CollapseAccumulator] = {}
            for name, acc in means.items():
                stats = acc.compute(opts)
                if name == last and linear is not None:
                    if linear.in_features != stats.dim:
                        raise ValueError(
                            f"classifier: in_features {linear.in_features} does not match the width "
                            f"{stats.dim} of layer {name!r}; list the classifier's input layer last, "
                            "or pass classifier=None"
                        )
                    centred[name] = CollapseAccumulator(stats, linear.weight, linear.bias)
                else:
                    centred[name] = CollapseAccumulator(stats)
            run(centred, captured, "collect: pass 2 of 2")
            return {name: acc.compute() for name, acc in centred.items()}
    finally:
        model.train(was_training)
