"""A zoo of classic broken defences, built around a trained base classifier, for tests of
adaptive attacks (BPDA, EOT) and of the indicators that flag obfuscated gradients.

Every function takes a trained base (an ``nn.Module`` taking [0, 1] images, such as the
``digits_model`` fixture: a small CNN on scikit-learn's 8x8 digits) and returns a small
``nn.Module`` in eval mode on the CPU whose defence step is a named submodule, so that
:func:`robeval.models.bpda.apply_bpda` can target it:

========================  ============  ==================================================
function                  submodule     how it fools a plain gradient attack
========================  ============  ==================================================
:func:`quantized`         ``quantize``  rounding: the input gradient is exactly zero
:func:`jpeg_like`         ``jpeg``      a numpy JPEG round trip: exactly zero
:func:`random_resize_pad` ``randomize`` randomness: every forward is another function
:func:`saturated_softmax` ``softmax``   saturated probabilities: CE gradients vanish (0.0)
:func:`detached`          ``detach``    a ``detach()``: exactly zero
:func:`kwta`              ``kwta``      meant to: a discontinuous activation (see below)
========================  ============  ==================================================

The steps that break the graph (numpy, ``detach``) are re-attached to the input with a
zero gradient (:func:`zero_gradient`), as an attack library that treats a missing
gradient as zero sees them: gradient attacks then run, see exactly zero, and are fooled,
instead of stopping with an autograd error (the runner freezes the parameters, so a
detached output would have no graph at all).

:data:`ADAPTIVE` says how each is broken: BPDA with the identity on the named submodule
(Athalye, Carlini & Wagner, ICML 2018, Sec. 4.1), or EOT (Sec. 4.3) for the random one.
None of them declares ``bpda_modules``: plain attacks are meant to be fooled by them.

Measured with the ``digits_model`` fixture's recipe (small-cnn, 8 epochs) on 256 seeded
digits test images, L-inf eps 0.1 / 0.2, robust accuracy in % (robeval's PGD, 20 steps
from a seeded random start; a point is robust if one forward of the model on the
returned iterate is right; BPDA on the submodule named above):

=================  =====  ========================  ============  ============
model              clean  attack                    keep=best     keep=last
=================  =====  ========================  ============  ============
base               98.4   PGD-20                    59.0 / 3.1    59.0 / 3.1
quantized          98.4   PGD-20                    97.7 / 96.5   97.7 / 96.5
                          + BPDA ``quantize``       47.7 / 10.2   48.4 / 10.2
jpeg_like          94.9   PGD-20                    92.2 / 90.6   92.2 / 90.6
                          + BPDA ``jpeg``           57.0 / 8.2    65.2 / 16.0
random_resize_pad  92.2   PGD-20                    73.4 / 48.4   58.2 / 6.6
                          PGD-20, eot=10            62.9 / 34.0   52.3 / 7.4
saturated_softmax  98.4   PGD-20 (also loss=margin) 97.7 / 96.5   97.7 / 96.5
                          + BPDA ``softmax``        75.4 / 9.0    75.4 / 9.4
detached           98.4   PGD-20                    97.7 / 97.3   97.7 / 97.3
                          + BPDA ``detach``         59.0 / 3.1    59.0 / 3.1
kwta               97.3   PGD-20                    56.6 / 3.5    60.9 / 5.1
                          + BPDA ``kwta``           69.5 / 8.2    73.4 / 14.1
=================  =====  ========================  ============  ============

**The random defence fools PGD's early stop, not its gradient**: with ``keep=best`` a
point leaves the attack at the first iterate that one random forward misclassifies, and
a fresh forward then often classifies it right again; the last iterate (``keep=last``)
is about as adversarial as on the base even without EOT, because on 8x8 digits the
gradient of one draw transfers to the others (sides down to 4 pixels did not change
that). EOT over 10 draws helps ``keep=best`` only partly (its stop uses the mean of the
10 softmax outputs).

A margin loss on the saturated softmax's outputs is fooled like the cross-entropy (its
gradient vanishes too). BPDA on ``softmax`` stays above the base at eps 0.1 (more steps,
a smaller step or the margin loss do not help; 5 restarts: 73.8 / 5.9): the cross-entropy
of one-hot outputs pushes all other logits up equally instead of the runner-up's.

**k-WTA does not mask gradients on this small net**: plain PGD fools it about as well as
the base (so it is left out of :data:`MASKS_GRADIENTS`), and BPDA with the identity is a
worse attack than its own gradient. Sparser settings (down to 1 % winners, either ReLU,
both ReLUs, the fc input, fine-tuned or not) only made it more fragile; Xiao et al.'s
effect needs wider networks than a test can train in seconds.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ADAPTIVE",
    "MASKS_GRADIENTS",
    "build_zoo",
    "detached",
    "jpeg_like",
    "kwta",
    "quantized",
    "random_resize_pad",
    "saturated_softmax",
    "zero_gradient",
]

#: The adaptive attack that breaks each zoo model: ("bpda", submodule) or ("eot", K).
ADAPTIVE: dict[str, tuple[str, str | int]] = {
    "quantized": ("bpda", "quantize"),
    "jpeg_like": ("bpda", "jpeg"),
    "random_resize_pad": ("eot", 10),
    "saturated_softmax": ("bpda", "softmax"),
    "detached": ("bpda", "detach"),
    "kwta": ("bpda", "kwta"),
}


#: The zoo models that fool plain PGD-20 (all but :func:`kwta`; :func:`random_resize_pad`
#: only with PGD's default ``keep=best``, see the module docstring).
MASKS_GRADIENTS = frozenset({"quantized", "jpeg_like", "random_resize_pad", "saturated_softmax", "detached"})


def _frozen(module: nn.Module) -> nn.Module:
    return module.eval().cpu()


class _ZeroGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, value: Tensor) -> Tensor:  # type: ignore[override]
        return value.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return torch.zeros_like(grad), None


def zero_gradient(x: Tensor, value: Tensor) -> Tensor:
    """``value`` (computed outside autograd) attached to ``x`` with a zero gradient."""
    return _ZeroGradient.apply(x, value.detach()) if torch.is_grad_enabled() and x.requires_grad else value


class _Preprocessed(nn.Module):
    """``model(step(x))`` with the step in a submodule called ``step_name``."""

    def __init__(self, base: nn.Module, step_name: str, step: nn.Module) -> None:
        super().__init__()
        self.step_name = step_name
        self.add_module(step_name, step)
        self.model = base

    def forward(self, x: Tensor) -> Tensor:
        return self.model(getattr(self, self.step_name)(x))


# --------------------------------------------------------------------------- quantisation


class Quantize(nn.Module):
    """``round(levels * x) / levels``: zero gradient almost everywhere."""

    def __init__(self, levels: int) -> None:
        super().__init__()
        self.levels = int(levels)

    def forward(self, x: Tensor) -> Tensor:
        return torch.round(x * self.levels) / self.levels

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


def quantized(base: nn.Module, levels: int = 7) -> nn.Module:
    """Input quantisation before the base (thermometer-like discretisation, Buckman et al.
    ICLR 2018; Athalye et al. 2018 Sec. 4.1 / 5.2.1): ``base(round(levels x) / levels)``,
    submodule ``quantize``. ``torch.round`` has a zero derivative, so the input gradient
    is exactly zero."""
    return _frozen(_Preprocessed(base, "quantize", Quantize(levels)))


# --------------------------------------------------------------------------- JPEG


def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix (rows: frequencies)."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


class JPEGLike(nn.Module):
    """A JPEG-like compression round trip in numpy: ``block`` x ``block`` DCT, each
    coefficient rounded to a multiple of ``step * (1 + u + v)`` (coarser at higher
    frequencies ``u, v``, like JPEG's tables), inverse DCT, clamp to [0, 1]. The numpy
    round trip breaks the graph; the result is re-attached with a zero gradient."""

    def __init__(self, block: int = 4, step: float = 0.2) -> None:
        super().__init__()
        self.block = int(block)
        self.step = float(step)

    def forward(self, x: Tensor) -> Tensor:
        b = self.block
        n, c, h, w = x.shape
        if h % b or w % b:
            raise ValueError(f"JPEGLike needs sides divisible by {b}, got {h}x{w}")
        d = _dct_matrix(b)
        table = self.step * (1 + np.arange(b)[:, None] + np.arange(b)[None, :])
        img = x.detach().cpu().double().numpy().reshape(n, c, h // b, b, w // b, b)
        coef = np.einsum("ui,ncpiqj,vj->ncpuqv", d, img, d)
        coef = np.round(coef / table[None, None, None, :, None, :]) * table[None, None, None, :, None, :]
        back = np.einsum("ui,ncpuqv,vj->ncpiqj", d, coef, d).reshape(n, c, h, w)
        out = torch.from_numpy(np.clip(back, 0.0, 1.0)).to(dtype=x.dtype, device=x.device)
        return zero_gradient(x, out)

    def extra_repr(self) -> str:
        return f"block={self.block}, step={self.step}"


def jpeg_like(base: nn.Module, block: int = 4, step: float = 0.2) -> nn.Module:
    """JPEG compression as a defence (Guo et al., ICLR 2018, "Countering adversarial
    images using input transformations"; Dziugaite et al. 2016), broken by BPDA in
    Athalye et al. 2018 Sec. 5.2.2: ``base(jpeg(x))``, submodule ``jpeg``
    (:class:`JPEGLike`), whose input gradient is exactly zero."""
    return _frozen(_Preprocessed(base, "jpeg", JPEGLike(block, step)))


# --------------------------------------------------------------------------- randomisation


class RandomResizePad(nn.Module):
    """Per image: resize (bilinear, differentiable) to a random side in
    ``[min_side, max_side]``, then zero-pad at a random offset back to the input size.
    Fresh randomness on every forward from torch's global RNG (seed it with
    ``torch.manual_seed``)."""

    def __init__(self, min_side: int, max_side: int | None = None) -> None:
        super().__init__()
        self.min_side = int(min_side)
        self.max_side = None if max_side is None else int(max_side)

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        top = min(h, w) if self.max_side is None else self.max_side
        sides = torch.randint(self.min_side, top + 1, (n,))
        slack = (min(h, w) - sides).float()
        dy = (torch.rand(n) * (slack + 1)).floor().long()
        dx = (torch.rand(n) * (slack + 1)).floor().long()
        out = x.new_zeros(x.shape)
        keys = torch.stack([sides, dy, dx], 1)
        for key in torch.unique(keys, dim=0):
            s, oy, ox = (int(v) for v in key)
            idx = (keys == key).all(1).nonzero().flatten().to(x.device)
            small = F.interpolate(x[idx], size=(s, s), mode="bilinear", align_corners=False)
            out = out.index_put((idx,), F.pad(small, (ox, w - s - ox, oy, h - s - oy)))
        return out

    def extra_repr(self) -> str:
        return f"min_side={self.min_side}, max_side={self.max_side}"


def random_resize_pad(base: nn.Module, min_side: int = 6, max_side: int | None = None,
                      finetune_epochs: int = 8) -> nn.Module:
    """Randomised resizing and padding (Xie et al., ICLR 2018, "Mitigating adversarial
    effects through randomization"), broken by EOT in Athalye et al. 2018 Sec. 5.3.1:
    ``base(randomize(x))`` with submodule ``randomize`` (:class:`RandomResizePad`). It is
    differentiable, but every forward draws another transformation (torch's global
    RNG), so a single gradient points the wrong way for the next draw.

    ``finetune_epochs`` > 0 fine-tunes a copy of the base on randomised digits (seeded)
    to recover clean accuracy."""
    step = RandomResizePad(min_side, max_side)
    if finetune_epochs:
        base = _finetune(copy.deepcopy(base), epochs=finetune_epochs, transform=step)
    return _frozen(_Preprocessed(base, "randomize", step))


# --------------------------------------------------------------------------- saturation


class TemperedSoftmax(nn.Module):
    """``softmax(temperature * logits)``."""

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = float(temperature)

    def forward(self, logits: Tensor) -> Tensor:
        return torch.softmax(self.temperature * logits, dim=1)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}"


class _Postprocessed(nn.Module):
    def __init__(self, base: nn.Module, step_name: str, step: nn.Module) -> None:
        super().__init__()
        self.model = base
        self.step_name = step_name
        self.add_module(step_name, step)

    def forward(self, x: Tensor) -> Tensor:
        return getattr(self, self.step_name)(self.model(x))


def saturated_softmax(base: nn.Module, temperature: float = 1000.0) -> nn.Module:
    """Saturated outputs like defensive distillation (Papernot et al., S&P 2016; broken
    by Carlini & Wagner, 2016 "Defensive distillation is not robust to adversarial
    examples" by attacking the logits): the model outputs ``softmax(T * logits)`` with a
    large T, submodule ``softmax``. The outputs are probabilities, one-hot in float32 for
    most points, so the cross-entropy of the outputs (and a margin on them) has an input
    gradient of exactly 0.0; BPDA on ``softmax`` attacks the logits."""
    return _frozen(_Postprocessed(base, "softmax", TemperedSoftmax(temperature)))


# --------------------------------------------------------------------------- detach


class Detach(nn.Module):
    """``x.detach()``, re-attached with a zero gradient (see the module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        return zero_gradient(x, x.detach())


def detached(base: nn.Module) -> nn.Module:
    """A ``detach()`` inside the forward pass, the simplest gradient masking (Athalye et
    al. 2018 Sec. 3: "shattered gradients" by a non-differentiable operation):
    ``base(detach(x))``, submodule ``detach``; the input gradient is exactly zero, and
    BPDA with the identity is exact here."""
    return _frozen(_Preprocessed(base, "detach", Detach()))


# --------------------------------------------------------------------------- k-WTA


class KWTA(nn.Module):
    """k-winners-take-all over each sample's whole layer (Xiao et al., ICLR 2020): keep
    the ``ratio`` largest activations (at least one) and set the rest to zero."""

    def __init__(self, ratio: float) -> None:
        super().__init__()
        self.ratio = float(ratio)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(1)
        k = max(1, int(round(self.ratio * flat.shape[1])))
        threshold = flat.topk(k, dim=1).values[:, -1:]
        return (flat * (flat >= threshold)).view_as(x)

    def extra_repr(self) -> str:
        return f"ratio={self.ratio:g}"


class KWTANet(nn.Module):
    """A copy of a small-cnn-like base (``[Normalize ->] features (Sequential) -> fc``)
    with one ReLU of ``features`` replaced by :class:`KWTA`, split around it so the
    activation is the submodule ``kwta``: ``head(kwta(stem(x)))``."""

    def __init__(self, base: nn.Module, ratio: float, position: int) -> None:
        super().__init__()
        net = copy.deepcopy(base)
        normalize = None
        if hasattr(net, "mean") and hasattr(net, "std") and hasattr(net, "model"):
            normalize, net = net, net.model
        features, fc = getattr(net, "features", None), getattr(net, "fc", None)
        if not isinstance(features, nn.Sequential) or not isinstance(fc, nn.Linear):
            raise TypeError("kwta needs a small-cnn-like base: features (nn.Sequential) then fc")
        relus = [i for i, m in enumerate(features) if isinstance(m, nn.ReLU)]
        cut = relus[position]
        if normalize is not None:
            self.register_buffer("mean", normalize.mean.clone(), persistent=False)
            self.register_buffer("std", normalize.std.clone(), persistent=False)
        else:
            self.register_buffer("mean", torch.zeros(1, 1, 1, 1), persistent=False)
            self.register_buffer("std", torch.ones(1, 1, 1, 1), persistent=False)
        self.stem = features[:cut]
        self.kwta = KWTA(ratio)
        self.rest = features[cut + 1:]
        self.fc = fc

    def forward(self, x: Tensor) -> Tensor:
        h = self.kwta(self.stem((x - self.mean) / self.std))
        return self.fc(torch.flatten(self.rest(h), 1))


def kwta(base: nn.Module, ratio: float = 0.1, position: int = -1, finetune_epochs: int = 0) -> nn.Module:
    """k-winners-take-all activations (Xiao et al., ICLR 2020, "Enhancing adversarial
    defense by k-winners-take-all"; broken by Tramer et al., NeurIPS 2020, "On adaptive
    attacks to adversarial example defenses", Sec. 5.13): a copy of the base with the
    ReLU ``position`` of its ``features`` replaced by k-WTA keeping the ``ratio`` largest
    activations per sample (submodule ``kwta``). The top-k selection makes the network
    discontinuous in its input, so local gradients are a poor guide; BPDA with the
    identity on ``kwta`` passes gradients as if the layer were linear.

    ``finetune_epochs`` > 0 fine-tunes the copy with k-WTA in place (seeded)."""
    net = KWTANet(base, ratio, position)
    if finetune_epochs:
        net = _finetune(net, epochs=finetune_epochs)
    return _frozen(net)


# --------------------------------------------------------------------------- zoo


def _finetune(net: nn.Module, *, epochs: int, transform: nn.Module | None = None,
              lr: float = 3e-3, batch_size: int = 128, seed: int = 0) -> nn.Module:
    """A few seeded epochs of Adam on the digits training split (12 steps each)."""
    import robeval

    x, y = robeval.load_dataset("digits", split="train")
    generator = torch.Generator().manual_seed(seed)
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    torch.manual_seed(seed)
    torch.set_num_threads(1)  # tiny batches: one thread is as fast, and immune to busy cores
    for p in net.parameters():
        p.requires_grad_(True)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    try:
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), batch_size):
                idx = order[start:start + batch_size]
                batch = x[idx] if transform is None else transform(x[idx])
                loss = F.cross_entropy(net(batch), y[idx])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    finally:
        torch.set_rng_state(state)
        torch.set_num_threads(threads)
    for p in net.parameters():
        p.grad = None
    return net.eval()


def build_zoo(base: nn.Module) -> dict[str, nn.Module]:
    """Every broken defence around ``base`` by name (the names of :data:`ADAPTIVE`),
    each in eval mode on the CPU. The base itself is shared, not copied (except by
    :func:`kwta`), so do not train it afterwards."""
    base = base.eval().cpu()
    return {
        "quantized": quantized(base),
        "jpeg_like": jpeg_like(base),
        "random_resize_pad": random_resize_pad(base),
        "saturated_softmax": saturated_softmax(base),
        "detached": detached(base),
        "kwta": kwta(base),
    }
