"""Winograd convolutions for the CPU model's residual blocks and transposed convolutions
(csrc/cpu/winograd.cpp).

oneDNN's direct convolutions run at the vector units' peak on CPUs without AMX, so only fewer
multiplies make them faster. A direct 3x3 convolution does 9 multiplies per output pixel and
channel pair; Winograd F(2x2, 3x3) does 4 (16 per 2x2 output tile, from a 4x4 input tile),
F(4x4, 3x3) 2.25 (36 per 4x4 tile, from 6x6) and F(6x6, 3x3) 1.78 (64 per 6x6 tile, from 8x8).
The residual blocks' 3x3 convolutions (C -> C, stride 1) carry 89% of DMPHN's FLOPs. The kernel
runs bfloat16 with the complex F(8x8, 3x3) below on CPUs with AVX512-BF16 (AMD Zen 4 and 5,
Intel Cooper Lake and later), and float32 with the real F(6x6, 3x3) on CPUs with AVX-512 or AVX2
with FMA (on request, `pack(..., tile=m)`: F(2x2, 3x3) in either dtype, the real F(4x4, 3x3) in
float32, the complex F(4x4, 3x3) in bfloat16). On CPUs with AMX, bfloat16 runs on the tile
units instead (the extension's AMX kernels, amx.py, and oneDNN's): forced on there, this kernel
ran a 720p frame in 2.9 s against oneDNN's 0.87-0.90 s (2-core Xeon, 2026-12-06).

The complex F(4x4, 3x3) (points 0, +-1, +-i and infinity; see csrc/cpu/winograd_body.h) does 46
real multiplies per 4x4 tile, 2.875 per output: 1.39x fewer than F(2x2, 3x3), and its transform
coefficients are 0 and +-1 only. The complex F(8x8, 3x3) (points 0, the eight 8th roots of unity
and infinity; coefficients 0, +-1 and +-sqrt(1/2)) does 142 per 8x8 tile, 2.22 per output, 1.30x
fewer again; bfloat16 runs it by default (`TILE`), at every channel count. Points
on the unit circle are what keep both as accurate as F(2x2, 3x3): a real F(6x6) or F(8x8) would
need points like 2 and 1/2, whose powers amplify rounding.

The decoders' ConvTranspose2d(C, K, 4, stride=2, padding=1) (7% of the FLOPs) runs on the same
kernel: output row 2i + p takes input rows (i - 1, i) for p = 0 and (i, i + 1) for p = 1, so
each of the four row/column parities is a 2-tap correlation per side, done as F(3x3, 2x2) with
points 0, +-1 and infinity (16 multiplies per 3x3 outputs instead of 36, transform coefficients
1/2 and 1: within 2x torch's error in both dtypes). So do the encoders' Conv2d(C, K, 3, stride=2,
padding=1): per side, output r of a tile reads input offsets 2r, 2r + 1 and 2r + 2, so the even
offsets (taps 0 and 2) form a 2-tap correlation, done as the same F(3, 2), and the odd ones (tap
1) pass through: a 7x7 input tile gives 3x3 outputs from 49 multiplies instead of 81
(`pack_stride2`).

Numerics: the transforms run in float32; the transformed input tiles and weights are rounded to
the activation type and the products accumulate in float32. tests/test_winograd.py holds
F(2x2, 3x3)'s and the complex ones' error to at most 2x that of torch's own convolution in the
same dtype, against float64 (in bfloat16 over the test's cases, at most 1.84x in rms for the
complex F(4x4), 1.82x for the complex F(8x8) (1.52x at the worst pixel) and 1.99x for
F(2x2, 3x3)). The real F(4x4, 3x3)'s and F(6x6, 3x3)'s transforms (coefficients up to 8 and 32)
amplify rounding: in float32 their error is ~1e-6 to 1e-5 of the values, F(4x4)'s up to ~14x
direct float32's at the worst pixel and 5x in rms, F(6x6)'s 21x and 11x (the test's bounds: 24x
and 36x, 8x and 18x), still two orders of magnitude below what 8-bit output can show; in
bfloat16 F(4x4) would be ~10x torch's own (rms, simulated), so bfloat16 runs the complex ones. A
real F(3x3, 3x3) would do 25 multiplies per 9 outputs (2.78), but simulated in bfloat16 its error
is 7x torch's."""

from __future__ import annotations

import functools
import platform
import sys

import torch

from ..errors import env_flag

# G of F(m x m, 3x3) by output tile side m: U = G g G^T turns a 3x3 kernel into its
# (m + 2) x (m + 2) Winograd form. F(4x4, 3x3): Lavin and Gray's, points 0, +-1, +-2.
_G = {2: ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0)),
      4: ((1 / 4, 0.0, 0.0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6),
          (1 / 24, -1 / 12, 1 / 6), (0.0, 0.0, 1.0)),
      # F(6x6, 3x3): points 0, 1, -1, 2, -2, 1/2, -1/2 (rows (1, p, p^2) / prod over the other
      # points q of (p - q)), then infinity; B^T in csrc/cpu/winograd_body.h
      6: ((-1.0, 0.0, 0.0), (-2 / 9, -2 / 9, -2 / 9), (-2 / 9, 2 / 9, -2 / 9), (1 / 90, 1 / 45, 2 / 45),
          (1 / 90, -1 / 45, 2 / 45), (32 / 45, 16 / 45, 8 / 45), (32 / 45, -16 / 45, 8 / 45), (0.0, 0.0, 1.0))}
# The output tile (m of F(m x m, 3x3)) each dtype runs by default; see the module's docstring.
# float32: the real F(6x6, 3x3); on 2 AMD Zen 4 cores, per 720p-level convolution 1.08-1.27x
# faster than the real F(4x4) (AVX2: 1.14-1.28x), a whole frame 2.48 s against 2.91. bfloat16:
# the complex F(8x8, 3x3); per convolution against the complex F(4x4): 32 channels 19.0-19.7 ms
# against 20.2-21.5, 64 level at 16-17 ms, 128 13.9-14.5 ms against 16.8-18.0 (a whole frame:
# within the host's noise). benchmarks/RESULTS.md has both.
TILE = {torch.bfloat16: 8, torch.float32: 6}
DTYPES = (torch.bfloat16, torch.float32)


def _complex_g(m: int) -> tuple[tuple[complex, ...], ...]:
    """G of the complex F(m x m, 3x3) for m = 4 or 8 (csrc/cpu/winograd_body.h): the points 0, 1,
    -1 and infinity, then one of each conjugate pair of the other m-th roots of unity (i for
    m = 4; i, e^(-i pi/4) and e^(3i pi/4) for m = 8), whose G rows are (1, z, z^2) / m."""
    pairs = (1j,) if m == 4 else (1j, complex(0.5 ** 0.5, -(0.5 ** 0.5)), complex(-(0.5 ** 0.5), 0.5 ** 0.5))
    real = ((1, 0, 0), (1 / m, 1 / m, 1 / m), (1 / m, -1 / m, 1 / m), (0, 0, 1))
    return real + tuple((1 / m, z / m, z * z / m) for z in pairs)


def register_block(dtype: torch.dtype, in_channels: int, out_channels: int) -> int:
    """The kernel's register block (output channels per weight panel) for this convolution on
    this CPU; 0 when it does not run it here (no extension, instruction set, channel counts)."""
    from .. import _ext

    if dtype not in DTYPES or not _ext.load():
        return 0
    return int(torch.ops.fastdeblur.winograd_block(dtype, in_channels, out_channels))


# What the kernel needs besides the kernel size (pack's error names it; the others refer to it).
_RUNS = ("input channels a multiple of the vector width, 8 on AVX2 or 16 on AVX-512; output channels a multiple "
         "of 16 on AVX2 or 32 on AVX-512; the extension built, and AVX2+FMA for float32 or AVX512-BF16 for "
         "bfloat16")


def _block_or_raise(weight: torch.Tensor, dtype: torch.dtype, c: int, k: int, side: int, what: str = "",
                    detail: str = "channel counts and CPU as for pack") -> int:
    """register_block for a C -> K (`what`) weight with side x side kernels, or the ValueError saying
    the kernel does not run it here."""
    nr = register_block(dtype, c, k) if weight.shape[2:] == (side, side) else 0
    if nr == 0:
        kind = f"{what} " if what else ""
        raise ValueError(f"the Winograd kernel does not run a {tuple(weight.shape)} {kind}weight in {dtype} on "
                         f"this machine ({side}x{side} kernels; {detail})")
    return nr


def pack(weight: torch.Tensor, dtype: torch.dtype = torch.bfloat16, tile: int | None = None) -> torch.Tensor:
    """[K, C, 3, 3] conv weight -> the kernel's [NP, K/NR, C/P, NR, P] transformed weight in
    `dtype`, for Winograd F(m x m, 3x3) with m = `tile` (2 or 4, 6 in float32, 8 in bfloat16;
    default TILE[dtype]).

    NP = (m + 2)^2 positions, but for the complex ones in bfloat16: 46 for F(4x4, 3x3) and 142
    for F(8x8, 3x3). NR is this CPU's register block (`register_block`); P = 2 for bfloat16,
    whose dot products multiply pairs of input channels, else 1. The transform runs in float64,
    as one product with `_tap_map` (the complex ones' map built in complex128, once).
    """
    k, c = weight.shape[:2]
    m = TILE.get(dtype, 2) if tile is None else tile
    if m not in (2, 4, 6, 8) or (m == 8 and dtype != torch.bfloat16) or (m == 6 and dtype != torch.float32):
        raise ValueError(f"Winograd tile {m}: the kernel runs F(2x2, 3x3) and F(4x4, 3x3), F(6x6, 3x3) in "
                         "float32 and F(8x8, 3x3) in bfloat16")
    nr = _block_or_raise(weight, dtype, c, k, 3, detail=_RUNS)
    w = weight.detach().to("cpu", torch.float64).reshape(k * c, 9)
    u = (_tap_map(m, m >= 4 and dtype == torch.bfloat16) @ w.T).reshape(-1, k, c)
    return _panels(u, dtype, nr)


@functools.cache
def _tap_map(m: int, complex_: bool) -> torch.Tensor:
    """[NP, 9] float64: each of F(m x m, 3x3)'s packed positions (the complex variant's with
    complex_) as a linear combination of a 3x3 kernel's taps, from the transforms applied to the 9
    unit kernels. pack is then one float64 matrix product: building a 720p model packed its 72
    residual-block convolutions in 0.72 s with the complex transforms done per weight (27 ms at
    128 channels), and takes ~0.2 s so."""
    basis = torch.eye(9, dtype=torch.float64).reshape(9, 1, 3, 3)  # K = 9 unit kernels, C = 1
    u = _complex(basis, m) if complex_ else _sandwich(_G[m], basis)
    return u[:, :, 0].contiguous()


def _sandwich(g: tuple[tuple[float, ...], ...], w: torch.Tensor) -> torch.Tensor:
    """G w G^T of a [K, C, r, r] float64 weight, as [n * n, K, C] positions (n = G's rows), row by row."""
    gm = torch.tensor(g, dtype=torch.float64)
    return (gm @ w @ gm.T).permute(2, 3, 0, 1).reshape(len(g) ** 2, *w.shape[:2])


def _complex(w: torch.Tensor, m: int) -> torch.Tensor:
    """[K, C, 3, 3] float64 -> the complex F(m x m, 3x3)'s [NP, K, C] float64 weights (NP = 46
    for m = 4, 142 for m = 8), in the kernel's order of positions
    (csrc/cpu/winograd_body.h). With P the points' conjugate pairs (1 or 3): the 16 real products
    of the points 0, 1, -1 and infinity, 4 + 3 P per row with the complex ones of (row, pair)
    between them, then those of (pair, column), then of (pair p, pair q) and (p, conj(q)). Each
    complex weight u + iv becomes (u + v, v - u, v), times 2 (the kernel's output transform
    counts each conjugate pair once)."""
    g = torch.tensor(_complex_g(m), dtype=torch.complex128)
    pairs = g.shape[0] - 4
    wc = w.to(torch.complex128)
    u = torch.einsum("ij,kcjl,ml->imkc", g, wc, g)  # [4 + P, 4 + P, K, C] at (p, q)
    u_conj = torch.einsum("ij,kcjl,ml->imkc", g, wc, g.conj())  # at (p, conj(q))

    def gauss(z):
        return [2 * (z.real + z.imag), 2 * (z.imag - z.real), 2 * z.imag]

    slots = []
    for i in range(4):
        slots += [u[i, j].real for j in range(4)]
        for q in range(pairs):
            slots += gauss(u[i, 4 + q])
    for p in range(pairs):
        for j in range(4):
            slots += gauss(u[4 + p, j])
    for p in range(pairs):
        for q in range(pairs):
            slots += gauss(u[4 + p, 4 + q]) + gauss(u_conj[4 + p, 4 + q])
    return torch.stack(slots)


def _panels(u: torch.Tensor, dtype: torch.dtype, nr: int) -> torch.Tensor:
    """[NP, K, C] float64 transformed weights -> the kernel's [NP, K/NR, C/P, NR, P] in `dtype`."""
    np_, k, c = u.shape
    # rounded first, so that the permuting copy moves 2-4x fewer bytes
    u = u.to(dtype, memory_format=torch.contiguous_format).reshape(np_, k // nr, nr, c)
    if dtype == torch.bfloat16:  # each input channel pair moved as one 32-bit word (4.5x faster at 128 channels)
        pairs = u.view(torch.int32).permute(0, 1, 3, 2).contiguous()  # [NP, K/NR, C/2, NR]
        return pairs.view(dtype).reshape(np_, k // nr, c // 2, nr, 2)
    return u.permute(0, 1, 3, 2).unsqueeze(-1).contiguous()


# G of F(3, 2) with points 0, 1, -1 and infinity, the 2-tap correlation of both stride-2 kinds
# (csrc/cpu/winograd_body.h: bt_f3x2). Each phase of the transposed convolution is one per side,
# whose taps are these kernel rows (or columns) for output rows (columns) of parity 0 and 1.
_G_F3X2 = ((-1.0, 0.0), (0.5, 0.5), (0.5, -0.5), (0.0, 1.0))
_UP_TAPS = ((3, 1), (2, 0))


def pack_transpose(weight: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """ConvTranspose2d(C, K, 4, stride=2, padding=1)'s [C, K, 4, 4] weight -> the kernel's
    [64, K/NR, C/P, NR, P] transformed weight in `dtype` (NR and P as in `pack`): for each of the
    four output phases (row and column parity), G g G^T of its 2x2 taps (F(3x3, 2x2)), in an 8x8
    layout whose 4x4 blocks are the phases. The transform runs in float64."""
    c, k = weight.shape[:2]
    nr = _block_or_raise(weight, dtype, c, k, 4, "transposed")
    g = torch.tensor(_G_F3X2, dtype=torch.float64)
    w = weight.detach().to("cpu", torch.float64).permute(1, 0, 2, 3)  # [K, C, 4, 4]
    u = torch.zeros(8, 8, k, c, dtype=torch.float64)
    for pr, rows in enumerate(_UP_TAPS):
        for pc, cols in enumerate(_UP_TAPS):
            taps = w[:, :, list(rows)][:, :, :, list(cols)]  # [K, C, 2, 2]
            u[4 * pr:4 * pr + 4, 4 * pc:4 * pc + 4] = (g @ taps @ g.T).permute(2, 3, 0, 1)
    return _panels(u.reshape(64, k, c), dtype, nr)


# The stride-2 convolution's G per side: F(3, 2) on the taps at even input offsets (kernel taps 0
# and 2), then three rows passing the odd offsets' tap 1 through (csrc/cpu/winograd_body.h).
_G_S2 = tuple((a, 0.0, b) for a, b in _G_F3X2) + ((0.0, 1.0, 0.0),) * 3


def pack_stride2(weight: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Conv2d(C, K, 3, stride=2, padding=1)'s [K, C, 3, 3] weight -> the kernel's [49, K/NR, C/P, NR,
    P] transformed weight in `dtype` (NR and P as in `pack`): G g G^T with G's 7 rows per side, 4 of
    F(3, 2) on the taps at even input offsets (kernel rows 0 and 2) and 3 passing the tap at odd
    ones (row 1) through. The transform runs in float64."""
    k, c = weight.shape[:2]
    nr = _block_or_raise(weight, dtype, c, k, 3, "stride-2")
    return _panels(_sandwich(_G_S2, weight.detach().to("cpu", torch.float64)), dtype, nr)


@functools.cache
def available(dtype: torch.dtype = torch.bfloat16) -> bool:
    """The kernel runs `dtype` here, and a small convolution (odd size, edge tiles, every
    epilogue; the default tile), transposed convolution and stride-2 convolution match float64
    within that dtype's rounding."""
    if register_block(dtype, 16, 32) == 0:
        return False
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 5, 7, 16, generator=gen).to(dtype)
    w = (torch.rand(32, 16, 3, 3, generator=gen) - 0.5).to(dtype)
    wt = (torch.rand(16, 32, 4, 4, generator=gen) - 0.5).to(dtype)
    b, add = torch.rand(32, generator=gen), torch.rand(1, 5, 7, 32, generator=gen).to(dtype)
    nchw = x.permute(0, 3, 1, 2).double()
    with torch.inference_mode():
        got = conv3x3(x, pack(w, dtype), b, relu=True, add=add).double()
        want = torch.nn.functional.conv2d(nchw, w.double(), b.double(), padding=1)
        want = want.relu().permute(0, 2, 3, 1) + add.double()
        got_t = conv_transpose4x4s2(x, pack_transpose(wt, dtype), b).double()
        want_t = torch.nn.functional.conv_transpose2d(nchw, wt.double(), b.double(), stride=2, padding=1)
        got_s = conv3x3s2(x, pack_stride2(w, dtype), b).double()
        want_s = torch.nn.functional.conv2d(nchw, w.double(), b.double(), stride=2, padding=1)
    tol = 0.05 if dtype == torch.bfloat16 else 1e-4  # values up to ~5: bfloat16 rounding is ~0.02
    return bool((got - want).abs().max() <= tol and (got_t - want_t.permute(0, 2, 3, 1)).abs().max() <= tol
                and (got_s - want_s.permute(0, 2, 3, 1)).abs().max() <= tol)


def preferred(dtype: torch.dtype = torch.bfloat16) -> bool:
    """The CPU model runs its residual blocks and transposed convolutions in `dtype` through
    Winograd by default here.

    FASTDEBLUR_WINOGRAD=1/0 forces it on (where available) or off. By default: float32 wherever
    the kernel runs; bfloat16 where the CPU has no AMX (there the tile units are faster).
    """
    if not available(dtype):
        return False
    return env_flag("FASTDEBLUR_WINOGRAD", not (dtype == torch.bfloat16 and cpu_has_amx()))


def lost_without_extension(dtype: torch.dtype) -> bool:
    """The extension is not installed, yet on this CPU its Winograd kernels would run the CPU
    model's convolutions in `dtype` by default (x86-64 with AVX2 and FMA for float32, AVX512-BF16
    without AMX for bfloat16, FASTDEBLUR_WINOGRAD not 0): deblur() runs 2-3x slower than it could.
    From torch's own CPU probes, since the extension's are missing. Linux and macOS only: the
    kernels need GCC or Clang (an MSVC build has none of them, so nothing is lost there)."""
    from .. import _ext

    if _ext.load() or not env_flag("FASTDEBLUR_WINOGRAD", True):
        return False
    if platform.machine().lower() not in ("x86_64", "amd64") or not sys.platform.startswith(("linux", "darwin")):
        return False
    try:  # what torch's kernels may use (ATEN_CPU_CAPABILITY limits the extension's the same way)
        isa = torch.backends.cpu.get_cpu_capability()
        bf16 = torch.cpu._is_avx512_bf16_supported()
    except AttributeError:  # an older torch without the probes
        return False
    if dtype == torch.float32:
        return isa in ("AVX2", "AVX512")
    return dtype == torch.bfloat16 and isa == "AVX512" and bf16 and not cpu_has_amx()


def cpu_has_amx() -> bool:
    """The CPU has AMX tile units, on which the extension's AMX kernels and oneDNN run bfloat16
    convolutions (Intel Sapphire Rapids and later): there the extension's vector kernels leave
    bfloat16 to them."""
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without the probe
        return False


def conv3x3(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor, relu: bool = False,
            add: torch.Tensor | None = None) -> torch.Tensor:
    """relu?(conv3x3(x, w) + bias) [+ add], stride 1, padding 1, by Winograd F(m x m, 3x3), m as packed.

    x: NHWC bfloat16 or float32 memory, as an [N, H, W, C] tensor or a channels_last [N, C, H, W]
    one (the result takes the same form); u: `pack(w, x.dtype)`; bias: float32; add: the
    output's shape, form and dtype.
    """
    return torch.ops.fastdeblur.winograd_conv3x3(x, u, bias.float().contiguous(), relu, add)


def conv3x3_add_(acc: torch.Tensor, x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """acc += conv3x3(x, w) + bias in place (stride 1, padding 1) and return acc: a residual block's
    second convolution written over the block's input. acc: the output's shape, form and dtype,
    sharing no memory with x."""
    return torch.ops.fastdeblur.winograd_conv3x3_add_(acc, x, u, bias.float().contiguous())


def conv_transpose4x4s2(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """ConvTranspose2d(C, K, 4, stride=2, padding=1)(x) + bias: [N, H, W, C] -> [N, 2H, 2W, K] (or
    the channels_last [N, C, H, W] forms), as four Winograd F(3x3, 2x2) phases; u:
    `pack_transpose(w, x.dtype)`; bias: float32."""
    return torch.ops.fastdeblur.winograd_conv_transpose4x4s2(x, u, bias.float().contiguous())


def conv3x3s2(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Conv2d(C, K, 3, stride=2, padding=1)(x) + bias: [N, H, W, C] -> [N, (H + 1) // 2, (W + 1) // 2,
    K] (or the channels_last [N, C, H, W] forms), as a polyphase Winograd (49 multiplies per 3x3
    output tile instead of 81); u: `pack_stride2(w, x.dtype)`; bias: float32."""
    return torch.ops.fastdeblur.winograd_conv3x3s2(x, u, bias.float().contiguous())
