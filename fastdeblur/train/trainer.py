"""Trainer for DMPHN / Stack(N): Adam with warm-up + cosine decay, MSE (the authors' loss), AMP,
EMA of the weights, checkpoint and exact resume, periodic validation (PSNR, SSIM, saved strips),
CSV logs, progress bar.

Batches are indexed by step (`StepBatches`, or a source with its own `batch(step, size)` such
as `data.SyntheticBatches`, which makes them on the GPU): batch s is drawn from a generator seeded by
(seed, s), so a resumed run sees exactly the batches an uninterrupted one would, in any number
of worker processes. Checkpoints hold only tensors and plain values and load with
`torch.load(weights_only=True)`.

Several GPUs: launch with `torchrun --nproc_per_node=N -m fastdeblur.train.cli ...`; each rank
takes its slice of every step's batch (so the batch, and the result, do not depend on N), DDP
averages the gradients, and rank 0 alone writes checkpoints and logs.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..errors import InputError
from ..io import write_image
from ..metrics import psnr, ssim
from ..reference import DMPHN, StackDMPHN, size_multiple
from .init import identity_init

# input_loss: the blurry batch's own MSE against the sharp one, i.e. the loss of a model that
# returns its input; a model that learns goes well below it
# mse: the output's MSE, equal to loss under the default loss and comparable across losses
LOG_COLUMNS = ["step", "loss", "lr", "images_per_s", "val_psnr", "input_loss", "val_ssim", "mse"]
LOSSES = ("mse", "l1", "charbonnier")
CHARBONNIER_EPS = 1e-3


def pixel_loss(out: torch.Tensor, target: torch.Tensor, kind: str = "mse", fft_weight: float = 0.0) -> torch.Tensor:
    """The training loss of `out` against `target` (float32, [N, 3, H, W]).

    kind: "mse" (the authors'), "l1", or "charbonnier" (sqrt(d^2 + eps^2), a smooth L1 with
    eps = 1e-3, as MPRNet's); fft_weight > 0 adds that times the mean absolute difference of the
    two images' 2-D spectra (real and imaginary parts, rfft2 with norm="forward": divided by H*W,
    so the term does not grow with the crop), which weighs the fine detail a blur removes as much
    as the smooth parts (MIMO-UNet's frequency loss).
    """
    d = out - target
    if kind == "mse":
        loss = d.square().mean()
    elif kind == "l1":
        loss = d.abs().mean()
    elif kind == "charbonnier":
        loss = (d.square() + CHARBONNIER_EPS ** 2).sqrt().mean()
    else:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {kind!r}")
    if fft_weight:
        spec = torch.view_as_real(torch.fft.rfft2(d, norm="forward"))  # linear: the spectrum of the difference
        loss = loss + fft_weight * spec.abs().mean()
    return loss


@dataclass
class TrainConfig:
    out_dir: str = "runs/fastdeblur"
    arch: str = "dmphn"  # or "stack"
    start: str = "identity"  # fresh weights: "identity" (out == in, see train/init.py) or "random"
    levels: tuple[int, ...] = (1, 2, 4)
    stages: int = 4
    crop: int = 256
    batch: int = 6
    steps: int = 3000
    lr: float = 1e-4
    warmup: int = 100
    min_lr_ratio: float = 0.05
    amp: str = "auto"  # auto | bf16 | fp16 | none
    ema: float = 0.999  # 0 disables
    clip: float = 0.0  # gradient norm limit (0: none); guards short high-learning-rate runs
    loss: str = "mse"  # see pixel_loss: mse (the authors'), l1, charbonnier
    fft_weight: float = 0.0  # weight of pixel_loss's frequency term (0: none)
    workers: int = 2
    seed: int = 0
    val_every: int = 500
    ckpt_every: int = 500
    log_every: int = 20
    device: str = "auto"
    max_seconds: float | None = None  # wall-clock budget of one run() call; checkpoints when spent
    notes: dict = field(default_factory=dict)


def build_model(cfg: TrainConfig) -> nn.Module:
    return DMPHN(cfg.levels) if cfg.arch == "dmphn" else StackDMPHN(cfg.stages)


def fresh_model(cfg: TrainConfig) -> nn.Module:
    """The model a new run starts from: PyTorch's random start, made the identity unless
    cfg.start == "random"."""
    if cfg.start not in ("identity", "random"):
        raise ValueError(f"start must be 'identity' or 'random', got {cfg.start!r}")
    model = build_model(cfg)
    return identity_init(model) if cfg.start == "identity" else model


def _model_name(config: dict) -> str:
    """DMPHN(1-2-4) or Stack(4), from a checkpoint's "config"."""
    if config.get("arch") == "stack":
        return f"Stack({config.get('stages')})"
    return f"DMPHN({'-'.join(map(str, config.get('levels', ())))})"


class StepBatches(Dataset):
    """Item s is the batch of training step s: deterministic in (seed, s)."""

    def __init__(self, data: Dataset, batch: int, seed: int):
        self.data, self.batch, self.seed = data, batch, seed

    def __len__(self) -> int:
        return 2**31 - 1

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, step])
        idx = rng.integers(0, len(self.data), self.batch)
        if hasattr(self.data, "set_epoch"):
            self.data.set_epoch(step * self.batch // len(self.data))
        blur, sharp = zip(*(self.data[int(i)] for i in idx), strict=True)
        return torch.stack(blur), torch.stack(sharp)


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "none":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    from ..api import cpu_has_fast_bf16

    return torch.bfloat16 if cpu_has_fast_bf16() else None


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def _distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group torchrun describes, if any."""
    import os

    import torch.distributed as dist

    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def train_device(name: str) -> str:
    """"auto" -> "cuda" when a GPU is there, else "cpu"; anything else as given, once checked
    (an InputError names a device that is not valid or not on this machine)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    from ..api import _resolve_device

    _resolve_device(name)
    return name


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped `Trainer.run` after a whole step, whose checkpoint is saved:
    running again resumes there. `exit_code`: the shell's for the signal (130 SIGINT, 143 SIGTERM)."""

    def __init__(self, step: int, path: Path, signum: int = 2):
        super().__init__(f"interrupted after step {step}; checkpoint {path} (run again to resume)")
        self.step, self.path, self.exit_code = step, path, 128 + signum


class _FinishStepOnInterrupt:
    """While training, Ctrl-C (SIGINT) or SIGTERM (`kill`, a job scheduler's preemption, `docker
    stop`) asks the loop to stop after the step in hand, so the checkpoint it saves is whole (a
    KeyboardInterrupt inside the optimizer's step could leave the weights half updated) instead
    of losing the steps since the last one; a second signal acts at once (SIGTERM killed the run
    where it stood, with no checkpoint, until 2026-12-06). Only a single-process run on the main
    thread: DDP's ranks must stop at the same step, and other threads cannot take signals."""

    def __init__(self, enabled: bool = True):
        import signal
        import threading

        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.asked = False
        self.signum = int(signal.SIGINT)
        self._signals = (signal.SIGINT, signal.SIGTERM)
        self._before: dict = {}

    def __enter__(self):
        import signal

        if self.enabled:
            self._before = {s: signal.signal(s, self._ask) for s in self._signals}
        return self

    def _ask(self, signum, frame) -> None:
        self.asked, self.signum = True, int(signum)
        self._restore()  # the next Ctrl-C or SIGTERM is an ordinary one

    def _restore(self) -> None:
        import signal

        for s, handler in self._before.items():
            signal.signal(s, handler)
        self._before = {}

    def __exit__(self, *exc) -> None:
        self._restore()


def _ignore_interrupts(worker_id: int) -> None:
    """A data worker leaves Ctrl-C and SIGTERM (sent to the whole process group by a terminal, or a
    job scheduler) to the trainer (_FinishStepOnInterrupt), which still needs its batches until
    the step in hand is done; a worker that died of them would stop the loader. (A worker whose
    trainer has gone ends on its own: torch's loader watches the parent.)"""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def check_settings(cfg: TrainConfig, model: nn.Module | None) -> None:
    """Every setting the run cannot start or finish with, named at once (InputError), instead of
    a traceback from the optimizer, the data loader or the first forward."""
    rules = (("steps", "at least 1", cfg.steps >= 1), ("batch", "at least 1", cfg.batch >= 1),
             ("lr", "above 0", cfg.lr > 0), ("warmup", "0 or more", cfg.warmup >= 0),
             ("min_lr_ratio", "from 0 to 1", 0 <= cfg.min_lr_ratio <= 1), ("workers", "0 or more", cfg.workers >= 0),
             ("val_every", "at least 1", cfg.val_every >= 1), ("ckpt_every", "at least 1", cfg.ckpt_every >= 1),
             ("log_every", "at least 1", cfg.log_every >= 1), ("ema", "from 0 (off) to below 1", 0 <= cfg.ema < 1),
             ("clip", "0 (off) or more", cfg.clip >= 0),
             ("loss", f"one of {', '.join(LOSSES)}", cfg.loss in LOSSES),
             ("fft_weight", "0 (off) or more", cfg.fft_weight >= 0),
             ("max_seconds", "0 or more (or None)", cfg.max_seconds is None or cfg.max_seconds >= 0))
    wrong = [f"{name} must be {rule}, got {getattr(cfg, name)!r}" for name, rule, ok in rules if not ok]
    levels = model.levels if model is not None else cfg.levels if cfg.arch == "dmphn" else StackDMPHN.levels
    multiple = math.lcm(*size_multiple(levels))  # square crops, split evenly into every level's patches
    if cfg.crop < multiple or cfg.crop % multiple:
        wrong.append(f"crop must be a multiple of {multiple}, whose patch grids split it evenly, got {cfg.crop}")
    if wrong:
        raise InputError("; ".join(wrong))


class Trainer:
    def __init__(self, cfg: TrainConfig, train_set: Dataset, val_set: Dataset | None = None,
                 model: nn.Module | None = None):
        import os

        self.cfg = cfg
        check_settings(cfg, model)  # before fresh_model draws from the seeded generator
        self.rank, self.world = _distributed()
        if self.world > 1 and cfg.batch % self.world:
            raise ValueError(f"batch ({cfg.batch}) must be a multiple of the number of processes ({self.world})")
        device = train_device(cfg.device)
        if device == "cuda" and self.world > 1:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', self.rank))}"
        self.device = torch.device(device)
        torch.manual_seed(cfg.seed)
        self.model = (model or fresh_model(cfg)).to(self.device).train()
        # NHWC suits the GPU's tensor cores and oneDNN alike: on the 2-core CPU (bf16 autocast,
        # batch 4 of 192 px) a step takes 0.88 s against 2.16 s in NCHW. Before DDP, whose
        # gradient buckets follow the parameters' strides at construction.
        self.model.to(memory_format=torch.channels_last)
        self.net = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.index
                                               is not None else None)
        self.ema = {k: v.detach().clone() for k, v in self.model.state_dict().items()} if cfg.ema else None
        cuda = self.device.type == "cuda"
        if cuda:  # cuDNN picks its fastest kernels for the fixed crop size
            torch.backends.cudnn.benchmark = True
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, fused=cuda)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: _lr_factor(s, cfg))
        self.amp = _amp_dtype(cfg.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16 and self.device.type == "cuda")
        self.train_set, self.val_set = train_set, val_set
        self.step = 0
        self.resumed_at = 0  # the step run() found in out_dir/last.pt
        self.out = Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)

    # -- checkpoints ----------------------------------------------------------------------
    def state(self) -> dict:
        return {"model": self.model.state_dict(), "ema": self.ema, "opt": self.opt.state_dict(),
                "sched": self.sched.state_dict(), "scaler": self.scaler.state_dict(), "step": self.step,
                "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.cfg).items()},
                "torch_rng": torch.get_rng_state()}

    def save(self, name: str = "last.pt") -> Path:
        path = self.out / name
        if self.rank == 0:
            tmp = path.with_suffix(".tmp")
            torch.save(self.state(), tmp)
            tmp.replace(path)  # a crash never leaves a half-written checkpoint
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()  # every rank may read it from here on
        return path

    def load(self, path: str | Path) -> None:
        """Resume from checkpoint `path`; a checkpoint of another architecture, or one that cannot
        be read, is an InputError that names it (and what to do) instead of torch's key listing."""
        try:
            st = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as e:  # torch raises several types for damaged or foreign files
            raise InputError(f"checkpoint {path} could not be read ({type(e).__name__}: {e}); move it away "
                             "to start this run afresh") from e
        theirs = st.get("config", {}) if isinstance(st, dict) else {}
        mine = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.cfg).items()}
        keys = ("arch", "stages") if self.cfg.arch == "stack" else ("arch", "levels")
        if any(k in theirs and theirs[k] != mine[k] for k in keys):
            raise InputError(f"{path} is a checkpoint of {_model_name(theirs)}, and this run asks for "
                             f"{_model_name(mine)}: give --out a new folder, or resume with the run's own settings")
        try:
            self.model.load_state_dict(st["model"])
        except (KeyError, RuntimeError) as e:
            raise InputError(f"checkpoint {path} does not fit this run's model ({str(e).splitlines()[0]}); "
                             "give --out a new folder") from e
        if self.ema is not None and st.get("ema") is not None:
            self.ema = st["ema"]
        self.opt.load_state_dict(st["opt"])
        self.sched.load_state_dict(st["sched"])
        self.scaler.load_state_dict(st["scaler"])
        self.step = int(st["step"])
        torch.set_rng_state(st["torch_rng"].cpu())

    # -- training -------------------------------------------------------------------------
    def train_step(self, blur: torch.Tensor, sharp: torch.Tensor) -> torch.Tensor:
        if self.world > 1:  # this rank's slice of the step's batch
            blur, sharp = blur[self.rank::self.world], sharp[self.rank::self.world]
        blur, sharp = blur.to(self.device), sharp.to(self.device)
        blur = blur.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            out = self.net(blur - 0.5)
        loss = pixel_loss(out.float(), sharp - 0.5, self.cfg.loss, self.cfg.fft_weight)
        self.last_mse = F.mse_loss(out.detach().float(), sharp - 0.5)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.clip:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip, foreach=True)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        if self.ema is not None:
            # warm-up: early on the average follows the weights closely, else a short run's EMA
            # would still be mostly the random initialisation (0.999**186 = 0.83, seen here)
            decay = min(self.cfg.ema, (1 + self.step) / (10 + self.step))
            with torch.no_grad():
                live = self.model.state_dict()
                floats = [k for k, v in live.items() if v.dtype.is_floating_point]
                torch._foreach_lerp_([self.ema[k] for k in floats], [live[k] for k in floats], 1 - decay)
                for k, v in live.items():
                    if not v.dtype.is_floating_point:
                        self.ema[k].copy_(v)
        self.step += 1
        return loss.detach()  # a tensor: reading it would wait for the GPU at every step

    def run(self, steps: int | None = None) -> Path:
        """Train up to `steps` (default cfg.steps), resuming from out_dir/last.pt if present."""
        from tqdm import tqdm

        cfg = self.cfg
        if self.device.type == "cpu":  # in a container, the pool sized to its CPU quota (see api)
            from ..api import fit_threads_to_cpu_quota

            fit_threads_to_cpu_quota()
        if self.step == 0 and (self.out / "last.pt").is_file():
            self.load(self.out / "last.pt")
        self.resumed_at = self.step  # a run already at its steps trains nothing (the CLI says so)
        end = steps if steps is not None else cfg.steps
        if hasattr(self.train_set, "batch"):  # makes whole batches itself, on the device (SyntheticBatches)
            loader = (self.train_set.batch(s, cfg.batch) for s in range(self.step, end))
        else:
            loader = DataLoader(StepBatches(self.train_set, cfg.batch, cfg.seed), batch_size=None,
                                sampler=range(self.step, end), num_workers=cfg.workers,
                                worker_init_fn=_ignore_interrupts if cfg.workers and self.world == 1 else None)
        log = self.out / ("log.csv" if self.rank == 0 else f"log.rank{self.rank}.csv")
        new_log = not log.exists()
        # a run resumed from an older version keeps its log's columns (val_ssim came later)
        if new_log:
            columns = len(LOG_COLUMNS)
        else:
            with open(log) as fh:
                columns = len(fh.readline().rstrip("\n").split(","))
        stop = _FinishStepOnInterrupt(enabled=self.world == 1)
        import sys

        bar_off = self.rank != 0 or sys.stderr is None  # None: a daemon's stderr (the bar's writes would fail)
        with stop, open(log, "a", newline="") as fh, tqdm(total=end - self.step, desc="training", unit="step",
                                                           disable=bar_off) as bar:
            writer = csv.writer(fh)
            if new_log:
                writer.writerow(LOG_COLUMNS)
            t0, seen = time.perf_counter(), 0
            between_steps = True  # the state is a whole step's: a checkpoint of it resumes exactly
            try:
                for blur, sharp in loader:
                    if cfg.max_seconds is not None and time.perf_counter() - t0 > cfg.max_seconds:
                        break
                    between_steps = False
                    loss = self.train_step(blur, sharp)
                    between_steps = True
                    seen += blur.shape[0]
                    bar.update(1)
                    val = self.validate() if self.val_set is not None and self.step % cfg.val_every == 0 else None
                    if self.step % cfg.log_every == 0 or val is not None:
                        ips, loss = seen / (time.perf_counter() - t0), float(loss)
                        input_loss = F.mse_loss(blur.float(), sharp.float())
                        row = [self.step, f"{loss:.6f}", f"{self.sched.get_last_lr()[0]:.3e}", f"{ips:.2f}",
                               "" if val is None else f"{val['psnr']:.3f}", f"{float(input_loss):.6f}",
                               "" if val is None else f"{val['ssim']:.4f}", f"{float(self.last_mse):.6f}"]
                        writer.writerow(row[:columns])
                        fh.flush()
                        bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{ips:.1f}",
                                        **({} if val is None else {"val_psnr": f"{val['psnr']:.2f}"}))
                    if self.step % cfg.ckpt_every == 0:
                        self.save()
                    if stop.asked:
                        break
            except Exception:
                # An error between steps (the data, validation, the log's disk) keeps the steps done
                # since the last periodic checkpoint, up to ckpt_every of them; one inside a step
                # leaves that checkpoint, as does DDP, whose ranks save together.
                if between_steps and self.world == 1 and self.step > self.resumed_at:
                    print(f"\nfastdeblur.train: stopped by an error after step {self.step}; checkpoint "
                          f"{self.save()} (run again to resume)", file=sys.stderr, flush=True)
                raise
        path = self.save()
        if stop.asked:
            raise TrainingInterrupted(self.step, path, stop.signum)
        return path

    @torch.no_grad()
    def validate(self, max_images: int = 8, save_images: int = 3) -> dict[str, float]:
        """Mean PSNR and SSIM (8-bit, whole crop) of the EMA weights (or the live ones) on the first
        `max_images` validation pairs. The first `save_images` are written (rank 0) as one strip,
        blurry | output | sharp, to out_dir/val/step<step>_<i>.png, to look at as training goes."""
        model = build_model(self.cfg).to(self.device).eval()
        model.load_state_dict(self.ema if self.ema is not None else self.model.state_dict())
        psnrs, ssims = [], []
        for i in range(min(max_images, len(self.val_set))):
            blur, sharp = self.val_set[i]
            out = (model(blur[None].to(self.device) - 0.5) + 0.5).clamp(0, 1)[0].cpu()
            b, o, s = (_to_uint8(t) for t in (blur, out, sharp))
            psnrs.append(psnr(o, s))
            ssims.append(ssim(o, s) if min(s.shape[:2]) >= 11 else float("nan"))
            if i < save_images and self.rank == 0:
                write_image(self.out / "val" / f"step{self.step:07d}_{i}.png", np.concatenate([b, o, s], axis=1))
        return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims))}


def _to_uint8(img: torch.Tensor) -> np.ndarray:
    """[3, H, W] float in [0, 1] -> HxWx3 uint8 (rounded, as the metrics do)."""
    return (img.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
