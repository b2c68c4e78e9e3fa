"""``DynFaceRestorer``: DBLM → DSST → guided DDIM with DGSA, wired together (method.md §4.3).

Ablation modes (method.md §7.5), by name:

=================  =====================================================================================
``full``           3 guides (std*, std*−1, std*−2), DSST start steps, DGSA map, eta = std*/10
``no_dsst``        as full, but every face starts from pure noise at the top step and all guides are
                   active from the start (the paper's "sampling range 1000")
``no_dgsa``        as full, with a global guidance scale instead of the DGSA map
``single_guide``   as full, with the std* guide only
``fixed_start``    DifFace: RM(y) diffused to t = 400, no guidance, eta = 0.5
``restorer_only``  the DBLM restorer output RM(y) (no diffusion): the regression baseline
=================  =====================================================================================
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .colorfix import check_color_fix, gray_tone, to_gray
from .colorfix import color_fix as apply_color_fix
from .diffusion import GaussianDiffusion, ScheduleConfig, check_steps
from .dsst import DSSTTable
from .imaging import as_rgb_uint8, refuse_path
from .models.dblm import DBLM, DBLMConfig
from .models.dblm import PRESETS as DBLM_PRESETS
from .models.dgsa import DGSA, DGSAConfig
from .models.io import ModelLoadError, check_compatible, load_checked, load_state_dict_file
from .models.unet import PRESETS as UNET_PRESETS
from .models.unet import UNetConfig, UNetModel
from .registry import DEFAULT_DSST, DEFAULT_MODEL, resolve, weight_paths
from .sampler import SamplerConfig, guided_sample

MODES = ("full", "no_dsst", "no_dgsa", "single_guide", "fixed_start", "restorer_only")


def _keeps_global_rng(fn):
    """Run ``fn`` on a fork of torch's CPU random state: building networks draws their initial weights from it, and
    a caller's later ``torch.randn`` must not change because a restorer was built."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.random.fork_rng(devices=[]):
            return fn(*args, **kwargs)

    return wrapper


@dataclass(frozen=True)
class RestoreConfig:
    mode: str = "full"
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    n_guides: int = 3
    global_scale: float = 0.5  # A_t for no_dgsa (and when a model has no DGSA weights)
    eta_rule: str = "std/10"  # "std/10" (the paper) | "fixed"
    fixed_eta: float = 0.5  # DifFace's --eta, used by fixed_start and eta_rule="fixed"
    fixed_start_t: int = 400  # DifFace's start step
    start_from: str = "guide"  # "guide" (ý_0, §8 C8) | "restored" (RM(y))
    color_fix: str = "none"  # "none" | "wavelet" | "adain": low band / channel stats of the output from RM(y) (colorfix.py)
    keep_gray: bool = True  # a gray face (stored as RGB) comes back gray, not faintly tinted (colorfix.is_gray)

    def __post_init__(self) -> None:
        check_color_fix(self.color_fix)
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose from {', '.join(MODES)}")
        if self.eta_rule not in ("std/10", "fixed"):
            raise ValueError(f"unknown eta rule {self.eta_rule!r}")
        if self.start_from not in ("guide", "restored"):
            raise ValueError(f"unknown start_from {self.start_from!r}")
        if isinstance(self.n_guides, bool) or not isinstance(self.n_guides, int) or self.n_guides < 1:
            raise ValueError(f"n_guides must be an integer >= 1 (the paper: 3, at std*, std*-1, std*-2), got {self.n_guides!r}")


@dataclass
class RestoreOutput:
    """What :meth:`DynFaceRestorer.restore` returns, one entry per input face, in order.

    - ``images``: the restored faces, RGB uint8 (S, S, 3) at the model's size S (``restorer.size``).
    - ``records``: JSON-serialisable dicts saying what was done to each face: ``mode``, ``model``, ``std_star``
      (the estimated blur level), ``sigmas_init``/``sigmas_refined`` (the guides' σ before and after the descent),
      ``start_step``/``start_steps`` (DSST), ``nfe``, ``eta``, ``guidance``, ``guidance_scale``, ``fidelity``,
      ``steps``, ``seed``, ``precision``, ``color_fix``, ``gray_input``, ``seconds`` (``dynface restore`` adds the
      file's own fields to these in ``records/``).
    - ``maps``: with ``return_maps=True``, a list of uint8 (S, S, 3) images per name: ``guide0``, ``guide1``, ...
      (the re-blurred guides), ``restorer`` (the restorer's output) and ``dgsa`` (the guidance scale map); empty
      otherwise.
    - ``tensor``: the restored batch as a float (B, 3, S, S) tensor in [0, 1], on the restorer's device.
    """

    images: list[np.ndarray]  # uint8 (size, size, 3)
    records: list[dict]
    maps: dict[str, list[np.ndarray]] = field(default_factory=dict)
    tensor: torch.Tensor | None = None  # (B,3,H,W) in [0,1]


def _keep_gray(x: torch.Tensor, gray: torch.Tensor, cast: torch.Tensor) -> torch.Tensor:
    """``x`` with the faces marked in ``gray`` (B,) turned into gray (:func:`dynface.colorfix.to_gray`) plus their
    ``cast`` (B, 3) (:func:`dynface.colorfix.gray_tone`)."""
    if not bool(gray.any()):
        return x
    toned = (to_gray(x) + cast.to(x).view(-1, 3, 1, 1)).clamp(0, 1)
    return torch.where(gray.view(-1, 1, 1, 1).to(x.device), toned, x)


def _check_square(what: str, w: int, h: int, size: int) -> None:
    """Aligned face crops are square: one a little off (up to ``jobs.MAX_ALIGNED_ASPECT``, 1.25:1, as
    ``dynface restore --aligned`` takes them) is stretched to the model's square with a warning, one further off is
    refused, since its face would come back distorted."""
    from .jobs import MAX_ALIGNED_ASPECT

    if w == h:
        return
    advice = "crop it square, or pass the whole picture to restore_photo, which finds and aligns the faces"
    if max(w, h) / min(w, h) > MAX_ALIGNED_ASPECT:
        raise ValueError(f"{what}: not square ({w}x{h}): an aligned face crop would be stretched; {advice}")
    warnings.warn(f"{what}: not square ({w}x{h}): stretched to {size}x{size} for the model; {advice}",
                  UserWarning, stacklevel=4)


def _to_uint8(x: torch.Tensor) -> list[np.ndarray]:
    arr = (x.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return list(arr)


def _infer_unet_config(sd: dict, meta: dict, path: Path) -> UNetConfig:
    if "unet" in meta:
        return UNetConfig.from_dict(meta["unet"])
    for cfg in UNET_PRESETS.values():
        with torch.device("meta"):
            model = UNetModel(cfg)
        try:
            check_compatible(model, sd)
            return cfg
        except ModelLoadError:
            continue
    raise ModelLoadError(f"{path}: not a recognised prior (no config metadata and no preset of {sorted(UNET_PRESETS)} matches its keys/shapes)")


def load_prior(path: str | Path) -> tuple[UNetModel, dict]:
    """(prior UNet in eval mode, file metadata) from .safetensors with config metadata or a published .pth."""
    sd, meta = load_state_dict_file(path)
    unet = UNetModel(_infer_unet_config(sd, meta, Path(path)))
    load_checked(unet, sd, name=str(path))
    return unet.eval(), meta


def prior_schedule(meta: dict, unet: UNetModel) -> ScheduleConfig:
    """The noise schedule a prior file declares, else the DifFace default (linear, 1000 steps)."""
    if isinstance(meta.get("schedule"), dict):
        return ScheduleConfig(**meta["schedule"])
    return ScheduleConfig(learn_sigma=unet.cfg.learn_sigma)


RM_ONLY_MODES = ("fixed_start", "restorer_only")  # modes that need RM(y) but not std* (TM, SDE)


def load_dblm(path: Path | None, restorer: str | Path | None, size: int, mode: str, prior: Path | str) -> tuple[DBLM, bool]:
    """(DBLM, whether TM and SDE are trained) from a DBLM file, with ``restorer`` (DifFace's SwinIR ``.pth``,
    :mod:`dynface.models.swinir`) replacing the file's RM. A DBLM trained with ``--restorer`` holds only TM
    and SDE and refuses to load without one; with a restorer and no DBLM file only ``fixed_start`` and
    ``restorer_only`` can run."""
    if path is None and restorer is None:
        raise ModelLoadError(f"{prior}: no DBLM weights found beside it; pass dblm=PATH (--dblm) or a restorer (--restorer)")
    sd, meta = load_state_dict_file(path) if path is not None else ({}, {})
    net = DBLM(DBLMConfig.from_dict(meta.get("dblm", {"size": size})))
    external = meta.get("rm")
    if restorer is None:
        if isinstance(external, dict):
            raise ModelLoadError(f"{path}: TM and SDE were trained against an external restorer "
                                 f"({external.get('file', '?')}); pass it with restorer=PATH (--restorer)")
        load_checked(net, sd, name=str(path))
        return net, True
    from .models.swinir import load_swinir

    net.rm = load_swinir(restorer, io="signed")
    if path is None:
        if mode not in RM_ONLY_MODES:
            raise ModelLoadError(f"mode {mode!r} needs std* from TM and SDE: pass dblm=PATH (--dblm), trained with "
                                 "`dynface train dblm --stages sde,tm --restorer ...`; with a restorer alone only "
                                 f"{' and '.join(RM_ONLY_MODES)} run")
        return net, False
    parts = torch.nn.ModuleDict({"tm": net.tm, "sde": net.sde})
    load_checked(parts, {k: v for k, v in sd.items() if not k.startswith("rm.")}, name=f"{path} (TM and SDE)")
    return net, True


class DynFaceRestorer:
    """Restore aligned faces: ``DynFaceRestorer.from_pretrained("embedded-128").restore(faces)``."""

    def __init__(
        self,
        unet: UNetModel,
        dblm: DBLM,
        dgsa: DGSA | None,
        dsst: DSSTTable,
        cfg: RestoreConfig = RestoreConfig(),
        device: str | torch.device = "cpu",
        template_name: str = "utkface64",
        name: str = "custom",
        schedule: ScheduleConfig | None = None,
        std_available: bool = True,
    ):
        self.device = torch.device(device)
        self.unet = unet.to(self.device).eval().requires_grad_(False)
        self.dblm = dblm.to(self.device).eval().requires_grad_(False)
        self.dgsa = dgsa.to(self.device).eval().requires_grad_(False) if dgsa is not None else None
        self.dsst = dsst
        self.cfg = cfg
        self.template_name = template_name
        self.name = name
        self.diffusion = GaussianDiffusion.from_config(schedule or ScheduleConfig(learn_sigma=unet.cfg.learn_sigma))
        self.std_available = std_available  # False: RM from an external restorer and no TM/SDE weights
        if dblm.cfg.size != unet.cfg.image_size:
            raise ValueError(f"DBLM works at {dblm.cfg.size} px but the prior at {unet.cfg.image_size} px")

    # ---- construction ------------------------------------------------------------------------------
    @classmethod
    @_keeps_global_rng
    def from_pretrained(
        cls,
        name_or_path: str | Path = DEFAULT_MODEL,
        device: str = "cpu",
        mode: str = "full",
        steps: str | int | None = None,
        precision: str = "auto",
        dblm: str | Path | None = None,
        dgsa: str | Path | None = None,
        dsst: str | Path | None = None,
        color_fix: str | None = None,
        restorer: str | Path | None = None,
        **sampler_overrides,
    ) -> DynFaceRestorer:
        """Load a model by embedded name, model folder or prior file (see :mod:`dynface.registry`).

        ``precision``: "auto" (bf16 on a CPU with native bf16, else fp32: :func:`resolve_precision`),
        "fp32", "bf16" or "fp16". ``color_fix``: None = the model's default (``restore.color_fix`` in the
        prior's or the DGSA file's metadata; "none" when neither has one), else "wavelet" | "adain" | "none".
        ``restorer``: DifFace's SwinIR (``swinir_restoration512_L1.pth``) as RM, in place of the DBLM file's
        (see :func:`load_dblm`). ``steps``: a respacing of the 1000-step grid; ``"ddim10"`` and ``10`` are different
        grids (DDIM's even stride, and improved-diffusion's section spacing).
        """
        if color_fix is not None:  # a bad argument fails before any file is read
            check_color_fix(color_fix)
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
        unknown = sorted(set(sampler_overrides) - {f.name for f in fields(SamplerConfig)})
        if unknown:
            raise TypeError(f"from_pretrained: unknown argument(s) {', '.join(unknown)} (sampler options: "
                            f"{', '.join(f.name for f in fields(SamplerConfig))})")
        if steps is not None:
            check_steps(str(steps))
        check_device(device)
        if str(device).startswith("cpu") and (why := slow_cpu_precision(precision)):  # asked for, not "auto"
            warnings.warn(why, RuntimeWarning, stacklevel=3)
        precision = resolve_precision(precision, device)
        files = resolve(name_or_path)
        used = weight_paths(files, dblm, dgsa, dsst, restorer)
        unet, meta = load_prior(files.prior)
        ucfg = unet.cfg
        dblm_path = used.get("dblm")
        dblm_net, std_available = load_dblm(dblm_path, restorer, ucfg.image_size, mode, files.prior)
        dgsa_path = used.get("dgsa")
        dgsa_net = None
        trained: dict = {}
        defaults = _restore_defaults(meta)
        if dgsa_path is not None:
            dgsa_sd, dgsa_meta = load_state_dict_file(dgsa_path)
            dgsa_net = DGSA(DGSAConfig.from_dict(dgsa_meta.get("dgsa", {})))
            load_checked(dgsa_net, dgsa_sd, name=str(dgsa_path))
            # DGSA learned its map relative to a base step (§8 C3): sample with the same one by default
            trained = {k: v for k, v in dgsa_meta.get("train", {}).items() if k in ("zeta", "step_rule")}
            known = {f.name for f in fields(SamplerConfig)}  # the packager's calibrated defaults win
            trained.update({k: v for k, v in dgsa_meta.get("sampler", {}).items() if k in known})
            defaults = {**defaults, **_restore_defaults(dgsa_meta)}
        dsst_path = used["dsst"]
        table = DSSTTable.load(dsst_path)
        template = meta.get("template", "ffhq512" if ucfg.image_size == 512 else "utkface64")
        sched = prior_schedule(meta, unet)
        sampler = SamplerConfig(precision=precision, **{**trained, **sampler_overrides})
        if steps is not None:
            sampler = replace(sampler, steps=str(steps))
        fix = color_fix if color_fix is not None else str(defaults.get("color_fix", "none"))
        rcfg = RestoreConfig(mode=mode, sampler=sampler, color_fix=fix)  # checks a model's own default
        r = cls(unet, dblm_net, dgsa_net, table, rcfg, device, template, files.name, sched, std_available)
        r.weight_files = used  # records hash them (dynface.provenance)
        return r

    @classmethod
    @_keeps_global_rng
    def from_preset(cls, preset: str = "tiny", dsst: DSSTTable | None = None, seed: int = 0, device: str = "cpu",
                    **cfg_kw) -> DynFaceRestorer:
        """Randomly initialised networks of a preset (tests, benchmarks of speed)."""
        torch.manual_seed(seed)
        unet = UNetModel(UNET_PRESETS[preset])
        dblm_cfg = DBLM_PRESETS.get(preset, DBLMConfig(size=unet.cfg.image_size))
        table = dsst if dsst is not None else DSSTTable.load(DEFAULT_DSST)
        template = "ffhq512" if unet.cfg.image_size == 512 else "utkface64"
        return cls(unet, DBLM(dblm_cfg), DGSA(), table, RestoreConfig(**cfg_kw), device, template, f"{preset}-random")

    @property
    def size(self) -> int:
        return self.unet.cfg.image_size

    def with_config(self, **changes) -> DynFaceRestorer:
        """A restorer sharing these networks with some RestoreConfig/SamplerConfig fields changed."""
        sampler_fields = SamplerConfig.__dataclass_fields__
        known = [f for f in (*RestoreConfig.__dataclass_fields__, *sampler_fields) if f != "sampler"]
        unknown = sorted(set(changes) - set(known))
        if unknown:
            import difflib

            hints = [f"{k!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(k, known, 1)) else repr(k)
                     for k in unknown]
            raise TypeError(f"with_config: unknown field(s) {', '.join(hints)}; the fields: {', '.join(known)}")
        if "precision" in changes:  # "auto" as from_pretrained takes it
            changes["precision"] = resolve_precision(changes["precision"], self.device)
        s_changes = {k: v for k, v in changes.items() if k in sampler_fields}
        r_changes = {k: v for k, v in changes.items() if k not in sampler_fields}
        new = object.__new__(DynFaceRestorer)
        new.__dict__.update(self.__dict__)
        new.cfg = replace(self.cfg, sampler=replace(self.cfg.sampler, **s_changes), **r_changes)
        return new

    def compiled(self, **compile_kw) -> DynFaceRestorer:
        """A restorer whose UNet runs under ``torch.compile(**compile_kw)`` (same weights, this one unchanged).

        Worth it on a GPU for long batches: on an H200 with the 512-px prior (bf16, batch 4) ``full`` took
        ×0.81 the time and ``fixed_start`` ×0.46, after 1–3 minutes of compilation on the first batches
        (docs/results/README.md). On a 2-core CPU with ``embedded-64`` it did not pay (×0.87–1.09).
        """
        new = self.with_config()
        unet = self.unet._orig_mod if hasattr(self.unet, "_orig_mod") else self.unet
        new.unet = torch.compile(unet, **compile_kw)
        return new

    # ---- inputs ------------------------------------------------------------------------------------
    def _prepare(self, faces) -> torch.Tensor:
        """Aligned faces → (B,3,S,S) in [−1,1]: a list of uint8 (H, W[, 1|3|4]) arrays or 8-bit PIL images (any size;
        resized to the model's), a (B, H, W, C) uint8 array, or a float (B,3,H,W) / (3,H,W) tensor in [0, 1].
        Anything else is refused with a message that names it, never cast (:func:`_check_tensor`,
        :func:`dynface.imaging.as_rgb_uint8`)."""
        s = self.size
        if isinstance(faces, torch.Tensor):
            x = _check_tensor(faces)
            _check_square("the faces", x.shape[-1], x.shape[-2], s)
            if x.shape[-2:] != (s, s):
                x = torch.nn.functional.interpolate(x, size=(s, s), mode="bicubic", antialias=True, align_corners=False)
            return (x.clamp(0, 1) * 2 - 1).to(self.device)
        refuse_path(faces, "restore")
        if isinstance(faces, Image.Image) or (isinstance(faces, np.ndarray) and faces.ndim in (2, 3)):
            faces = [faces]
        faces = list(faces)
        if not faces:
            raise ValueError("no faces to restore (an empty list)")
        arrs = []
        for k, f in enumerate(faces):
            what = f"face {k}"
            if isinstance(f, (Image.Image, np.ndarray, np.generic)):
                im = Image.fromarray(as_rgb_uint8(f, what))
            else:
                raise TypeError(f"{what}: expected a uint8 numpy array or a PIL image, got {type(f).__name__}"
                                + (" (pass a float (B,3,H,W) tensor in [0, 1] instead of a list of tensors)"
                                   if isinstance(f, torch.Tensor) else ""))
            if min(im.size) < 1:
                raise ValueError(f"{what}: empty image ({im.size[0]}x{im.size[1]})")
            _check_square(what, *im.size, s)
            if im.size != (s, s):
                im = im.resize((s, s), Image.LANCZOS)
            arrs.append(np.asarray(im))
        x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float() / 127.5 - 1
        return x.to(self.device)

    # ---- the method ----------------------------------------------------------------------------------
    def start_steps(self, sigmas_ref: torch.Tensor) -> torch.Tensor:
        """DSST start step of each guide (B,G), as integers on the 1000-step grid."""
        t = self.dsst.lookup(sigmas_ref.detach().cpu().double()).floor().long()
        return t.clamp(0, self.diffusion.num_timesteps - 1).to(self.device)

    @torch.inference_mode(False)  # the guidance differentiates through the UNet: also from a caller's inference_mode
    @torch.no_grad()
    def restore_tensor(self, y: torch.Tensor, seed: int = 0, fidelity: float | None = None, seeds: list[int] | None = None,
                       callback=None) -> tuple[torch.Tensor, list[dict], dict[str, torch.Tensor]]:
        """Core entry: y (B,3,S,S) in [−1,1] → (x in [0,1], records, maps in [0,1]).

        Face i's noise comes from ``seeds[i]`` when given, else from ``seed + i``. ``callback(step, steps_total)``
        is called once per sampling step. Works inside ``torch.no_grad()`` and ``torch.inference_mode()`` alike."""
        y = y.clone()  # a normal tensor, also when the caller made y in inference mode
        cfg, scfg = self.cfg, self.cfg.sampler
        if not self.std_available and cfg.mode not in RM_ONLY_MODES:
            raise ValueError(f"mode {cfg.mode!r} needs TM and SDE weights (this restorer has only RM); use {' or '.join(RM_ONLY_MODES)}")
        if fidelity is not None:
            check_fidelity(fidelity)
        t_start = time.perf_counter()
        b = y.shape[0]
        if seeds is not None and len(seeds) != b:
            raise ValueError(f"got {len(seeds)} seeds for {b} faces")
        if seeds is not None:
            face_seeds = [check_seed(v, f"seeds[{i}]") for i, v in enumerate(seeds)]
        else:
            first = check_seed(seed)
            face_seeds = [check_seed(first + i, "seed + face index") for i in range(b)]
        n_guides = 1 if cfg.mode == "single_guide" else cfg.n_guides
        if cfg.keep_gray:
            gray, cast = gray_tone((y.float() + 1) / 2)
        else:
            gray, cast = torch.zeros(b, dtype=torch.bool, device=y.device), torch.zeros(b, 3, device=y.device)
        d = self.dblm(y, n_guides=n_guides)
        maps: dict[str, torch.Tensor] = {f"guide{i}": (d.guides[:, i] + 1) / 2 for i in range(d.guides.shape[1])}
        maps["restorer"] = (d.restored + 1) / 2
        records = [
            {"mode": cfg.mode, "model": self.name, "std_star": float(d.std[i]), "sigmas_init": d.sigmas[i].tolist(), "seed": face_seeds[i],
             "precision": scfg.precision, "color_fix": "none" if cfg.mode == "restorer_only" else cfg.color_fix,
             "gray_input": bool(gray[i]), "gray_cast_levels": [round(float(v) * 255, 2) for v in cast[i]]}
            for i in range(b)
        ]
        if not self.std_available:
            for r in records:
                r.update(std_star=None, sigmas_init=None)
        if cfg.mode == "restorer_only":
            x = _keep_gray(((d.restored + 1) / 2).clamp(0, 1), gray, cast)
            secs = (time.perf_counter() - t_start) / b
            for r in records:
                r.update(nfe=0, seconds=secs)
            return x, records, maps

        top = self.diffusion.num_timesteps - 1
        join = self.start_steps(d.sigmas)
        if cfg.mode == "fixed_start":
            starts = torch.full((b,), cfg.fixed_start_t, device=self.device)
            join = torch.full_like(join, cfg.fixed_start_t)
        elif cfg.mode == "no_dsst":
            join = torch.full_like(join, top)
            starts = join[:, 0]
        else:
            starts = join[:, 0]
        start_img = d.restored if (cfg.mode == "fixed_start" or cfg.start_from == "restored") else d.guides[:, 0]
        if cfg.mode == "fixed_start" or cfg.eta_rule == "fixed":
            eta = torch.full((b,), cfg.fixed_eta, device=self.device)
        else:
            eta = eta_from_std(d.std)
        sampler_cfg = replace(scfg, guidance="none") if cfg.mode == "fixed_start" else scfg
        w = 0.5 if fidelity is None else fidelity
        zeta = scfg.zeta * 2 * w
        use_dgsa = cfg.mode not in ("no_dgsa",) and self.dgsa is not None
        scale_map = self.dgsa if use_dgsa else cfg.global_scale
        gens = [torch.Generator().manual_seed(s) for s in face_seeds]
        res = guided_sample(
            self.unet, self.diffusion, start_img, starts.tolist(), d.guides, d.sigmas, join, eta, sampler_cfg,
            self.dblm.cfg.size / self.dblm.cfg.ref_size, scale_map, zeta, gens, callback=callback,
        )
        x = _keep_gray(((apply_color_fix(res.x.float(), d.restored, cfg.color_fix) + 1) / 2).clamp(0, 1), gray, cast)
        maps["dgsa"] = res.mean_map.expand(-1, 3, -1, -1) if sampler_cfg.guidance != "none" else torch.zeros_like(x)
        secs = (time.perf_counter() - t_start) / b
        for i, r in enumerate(records):
            r.update(
                start_step=int(starts[i]),
                start_steps=join[i].tolist() if cfg.mode not in ("fixed_start",) else [int(starts[i])],
                sigmas_refined=res.sigmas[i].tolist() if sampler_cfg.guidance != "none" else None,
                nfe=int(res.nfe[i]),
                eta=float(eta[i]),
                guidance=sampler_cfg.guidance,
                # what scaled the guidance: DGSA's map, or no_dgsa's (or a model without DGSA's) one constant
                guidance_scale="dgsa" if use_dgsa else float(cfg.global_scale),
                steps=str(scfg.steps),
                schedule=scfg.schedule,
                fidelity=w if sampler_cfg.guidance != "none" else None,  # fixed_start: no guidance for -w to scale
                seconds=secs,
            )
        return x, records, maps

    def restore(self, faces, seed: int = 0, fidelity: float | None = None, return_maps: bool = False,
                seeds: list[int] | None = None, callback=None) -> RestoreOutput:
        """Restore aligned faces: uint8 (H, W[, 1|3|4]) arrays or 8-bit PIL images of any size, a (B, H, W, C) uint8
        array, or a float (B,3,H,W) tensor in [0, 1]; anything else is refused with a TypeError/ValueError that says
        what it is (:meth:`_prepare`), never cast. A crop that is not square is stretched with a warning up to 1.25:1
        and refused beyond (``restore_photo`` aligns faces in a whole picture). Seeds are integers in 0..2**63-1 (:func:`check_seed`).

        ``seeds``: one per face; face i's noise then comes only from ``seeds[i]``, whatever else is in the batch
        (see :func:`dynface.jobs.face_seed`); else from ``seed + i`` (the batch can still move a few output values by
        ±1 level through the networks' float rounding: ``docs/results/batch_invariance.md``).
        ``callback(step, steps_total)``: called once per sampling step.

        Returns a :class:`RestoreOutput`: ``images``, uint8 (S, S, 3) arrays at the model's size S (``self.size``,
        whatever the input size), ``records`` (one JSON-serialisable dict per face: std*, start steps, NFE, ...),
        ``tensor`` (B,3,S,S) in [0, 1], and ``maps`` (uint8 images of the guides, the restorer output and the DGSA
        map) only with ``return_maps``."""
        y = self._prepare(faces)
        x, records, maps = self.restore_tensor(y, seed=seed, fidelity=fidelity, seeds=seeds, callback=callback)
        out = RestoreOutput(images=_to_uint8(x), records=records, tensor=x)
        if return_maps:
            out.maps = {k: _to_uint8(v) for k, v in maps.items()}
        return out

    def restore_photo(self, img, *, detail: str = "keep", **kwargs):
        """Detect, align, restore (one batch) and paste back the faces of a whole photo.

        ``detail="keep"`` (default): a face larger than the model keeps the photo's own detail above the model's
        Nyquist frequency; ``"restored"``: the whole face comes from the model. Other keywords: see
        :func:`dynface.faces.restore_photo`."""
        from .faces import restore_photo

        refuse_path(img, "restore_photo")
        return restore_photo(img, self, detail=detail, **kwargs)


def _restore_defaults(meta: dict) -> dict:
    """A weights file's stored restore defaults (``{"restore": {"color_fix": ...}}`` in its metadata)."""
    d = meta.get("restore")
    return d if isinstance(d, dict) else {}


def slow_cpu_precision(precision: str) -> str | None:
    """Why ``precision`` is slow on this machine's CPU (emulated), with the fast choice; None when it is not."""
    if precision not in ("bf16", "fp16"):
        return None
    native = cpu_has_native_bf16()
    if precision == "fp16":
        return ("precision fp16 on a CPU is emulated and slow (×4 the time of fp32 on a CPU with native bf16, ×20 or "
                "more without); " + ("bf16 is the fast choice on this CPU (×0.6–0.8 the time of fp32)" if native else
                                     "fp32 is the fast choice on this CPU (the default)"))
    if not native:
        return ("precision bf16 on this CPU is emulated (no AVX512-BF16 or AMX) and slow: ×20 or more the time of fp32, "
                "the fast choice here (the default)")
    return None


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16 in /proc/cpuinfo's flags).

    Without /proc/cpuinfo (macOS, Windows) torch's own dispatch level is asked: "AMX" counts.
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    try:
        return "AMX" in torch.backends.cpu.get_cpu_capability().upper()
    except (AttributeError, RuntimeError):
        return False


def check_device(device: str | torch.device) -> None:
    """A ValueError, in one line, for a device that is not one (``"gpu"``) or cannot be used here (``"cuda"`` with
    no CUDA): before any weights are read."""
    from .devices import unavailable

    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}: use cpu, cuda, cuda:N or mps") from None
    why = unavailable(str(device))
    if why:
        raise ValueError(why.removeprefix("--device "))


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """"auto" → "bf16" on a CPU with native bf16 (measured ×0.6–0.8 the time at the same quality), else
    "fp32" (other CPUs, and every other device, as before); any other value is returned as is."""
    if precision != "auto":
        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"unknown precision {precision!r}; choose from auto, fp32, bf16, fp16")
        return precision
    return "bf16" if torch.device(device).type == "cpu" and cpu_has_native_bf16() else "fp32"


MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed's range (and --seed's)


def check_fidelity(fidelity) -> float:
    """``fidelity`` as a float in [0, 1]: a TypeError for a non-number (a bool, a string), a ValueError outside."""
    if isinstance(fidelity, (bool, np.bool_)) or not isinstance(fidelity, (int, float, np.integer, np.floating)):
        raise TypeError(f"fidelity must be a number in [0, 1], got {type(fidelity).__name__} {fidelity!r}")
    if not 0.0 <= float(fidelity) <= 1.0:  # NaN fails too
        raise ValueError(f"fidelity must be in [0, 1], got {fidelity}")
    return float(fidelity)


def check_seed(seed, what: str = "seed") -> int:
    """``seed`` as an int in 0..2**63−1 (Python or numpy integers); a TypeError for anything else (a float, a string,
    a bool), a ValueError outside the range."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{what} must be an integer, got {type(seed).__name__} {seed!r}")
    if not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"{what} must be between 0 and {MAX_SEED}, got {int(seed)}")
    return int(seed)


def _check_tensor(x: torch.Tensor) -> torch.Tensor:
    """A face tensor as float (B,3,H,W) in [0, 1], else a TypeError/ValueError that says what it is instead."""
    if not torch.is_floating_point(x):
        raise TypeError(f"a {x.dtype} tensor: face tensors are float in [0, 1] (divide a uint8 one by 255, or pass "
                        "uint8 (H, W, 3) numpy arrays)")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a (B, 3, H, W) or (3, H, W) tensor, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"no faces to restore (a tensor of shape {tuple(x.shape)})")
    x = x.detach().float()
    if not torch.isfinite(x).all():
        raise ValueError("the face tensor holds NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -0.01 or hi > 1.01:
        guess = " (a [-1, 1] tensor? use (x + 1) / 2)" if lo >= -1.01 and hi <= 1.01 else (
            " (a 0..255 tensor? divide it by 255)" if hi > 1.5 else "")
        raise ValueError(f"face tensor values must be in [0, 1], got {lo:.3g}..{hi:.3g}{guess}")
    return x


def eta_from_std(std: torch.Tensor) -> torch.Tensor:
    """The paper's per-face DDIM eta: clip(std*/10, 0, 1)."""
    return (std / 10).clamp(0, 1)


