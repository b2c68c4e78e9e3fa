"""The job layer (dynface.jobs): scheduling-independent seeds, byte-identical outputs whatever the batching, and
per-step progress, on the `tiny` preset model (random weights, 32 px)."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _helpers import file_seed
from PIL import Image
from skimage import data

from dynface.jobs import FileResult, Progress, RestoreSettings, face_seed, plan_inputs, restore_items, run_job


@pytest.fixture(scope="module")
def tiny(tiny_random):
    return tiny_random.with_config(steps="ddim10")


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> Path:
    """8 aligned 48-px crops of the astronaut (different shifts), as PNG files."""
    d = tmp_path_factory.mktemp("crops")
    img = data.astronaut()
    for k in range(8):
        y, x = 30 + 6 * k, 130 + 4 * k
        Image.fromarray(img[y : y + 150, x : x + 150]).resize((48, 48), Image.LANCZOS).save(d / f"f{k}.png")
    return d


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "restored_faces").iterdir())}


def test_face_seed_is_a_stable_hash():
    assert face_seed(0, "a", 0) == 4860162715183157899  # fixed forever: results must not change between releases
    assert face_seed(7, "astro", 1) == 2585553180519667908
    seeds = {face_seed(s, st, i) for s in (0, 1) for st in ("a", "b", "a_1") for i in range(3)}
    assert len(seeds) == 18 and all(0 <= v < 2**63 for v in seeds)


def test_aligned_outputs_do_not_depend_on_batch_size_or_order(tmp_path, tiny, crops):
    tiny = tiny.with_config(steps="ddim5")
    files = sorted(crops.glob("*.png"))
    base = RestoreSettings(aligned=True, seed=5, threads=1, input_template=None)  # the crops as given (shifted windows)
    results = {}
    for bs in (1, 3, 8):
        out = tmp_path / f"bs{bs}"
        s = run_job([crops], out, RestoreSettings(**{**base.to_dict(), "batch_size": bs}), restorer=tiny)
        assert len(s.done) == 8 and not s.failed
        results[bs] = _outputs(out)
    shuffled = files[:]
    random.Random(1).shuffle(shuffled)
    assert shuffled != files
    s = run_job(shuffled, tmp_path / "shuf", RestoreSettings(**{**base.to_dict(), "batch_size": 3}), restorer=tiny)
    assert [r.path for r in s.results] == [str(f) for f in shuffled]
    results["shuffled"] = _outputs(tmp_path / "shuf")
    assert len(results[1]) == 8
    for k in (3, 8, "shuffled"):
        assert results[k] == results[1], f"outputs differ with {k}"
    # each face has its own seed, from its file's bytes (test_same_crop_under_two_names_is_restored_the_same: the seed matters)
    recs = [r.record["faces"][0]["restorer"]["seed"] for r in s.results]
    assert recs == [file_seed(r.path, 5) for r in s.results]


def test_same_crop_under_two_names_is_restored_the_same(tmp_path, tiny, crops):
    """Faces are seeded by their input's bytes, not its name: two copies of one exhibit gave two restorations
    (investigator audit). The seed still matters: another --seed gives another face."""
    d = tmp_path / "in"
    d.mkdir()
    for n in ("a.png", "b.png"):
        (d / n).write_bytes((crops / "f0.png").read_bytes())
    run_job([d], tmp_path / "o", RestoreSettings(aligned=True, threads=1), restorer=tiny)
    a, b = (np.asarray(Image.open(tmp_path / "o" / "restored_faces" / n)) for n in ("a.png", "b.png"))
    assert np.array_equal(a, b)
    run_job([d / "a.png"], tmp_path / "s1", RestoreSettings(aligned=True, threads=1, seed=1), restorer=tiny)
    assert not np.array_equal(a, np.asarray(Image.open(tmp_path / "s1" / "restored_faces" / "a.png")))


def test_photo_faces_do_not_depend_on_batch_size(tmp_path, tiny):
    astro = data.astronaut()
    two = np.concatenate([astro, astro[:, ::-1]], axis=1)  # two faces side by side
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(np.ascontiguousarray(two)).save(d / "two.png")
    outs = []
    for bs in (None, 1):
        out = tmp_path / f"o{bs}"
        s = run_job([d], out, RestoreSettings(upscale=1, batch_size=bs, threads=1), restorer=tiny)
        assert s.done and s.done[0].faces == 2
        outs.append((out / "restored_imgs" / "two.png").read_bytes())
        seeds = [f["restorer"]["seed"] for f in s.done[0].record["faces"]]
        assert seeds == [file_seed(d / "two.png", 0, 0), file_seed(d / "two.png", 0, 1)]
    assert outs[0] == outs[1]


def test_progress_moves_per_sampling_step(tmp_path, tiny, crops):
    events: list[Progress] = []
    items, _ = plan_inputs([crops / "f0.png", crops / "f1.png"], tmp_path / "o", RestoreSettings(aligned=True, batch_size=1))
    for sub in ("restored_faces", "cmp", "records"):
        (tmp_path / "o" / sub).mkdir(parents=True)
    got: list[FileResult] = []
    res = restore_items(items, tmp_path / "o", RestoreSettings(aligned=True, batch_size=1), tiny, events.append, on_result=got.append)
    assert [r.status for r in res] == ["done", "done"] and got == res
    steps = [e for e in events if e.step is not None]
    first_file = [e for e in steps if e.files_done == 0]
    assert len(first_file) >= 5, "the bar must move within a file, once per sampling step"
    assert first_file[-1].step == first_file[-1].steps_total
    fr = [e.fraction for e in events]
    assert fr == sorted(fr) and fr[-1] == 2 and 0 < first_file[0].fraction < 1


def test_run_job_leaves_torch_threads_alone(tmp_path, tiny, crops):
    before = torch.get_num_threads()
    seen = []

    def spy(p):
        seen.append(torch.get_num_threads())

    s = run_job([crops / "f0.png"], tmp_path / "o", RestoreSettings(aligned=True, threads=3), restorer=tiny, progress=spy)
    assert s.threads == 3 and set(seen) == {3}
    assert torch.get_num_threads() == before


def test_reduced_precision_restores_per_face_so_batching_cannot_matter(tmp_path, tiny, crops):
    from dynface.jobs import per_face

    bf16 = tiny.with_config(steps="ddim5", precision="bf16")
    assert per_face(bf16, RestoreSettings()) and not per_face(tiny, RestoreSettings())
    assert not per_face(bf16, RestoreSettings(deterministic=False))
    files = sorted(crops.glob("*.png"))[:4]
    outs = []
    for bs in (1, 4):
        out = tmp_path / f"bs{bs}"
        s = run_job(files, out, RestoreSettings(aligned=True, batch_size=bs, threads=1), restorer=bf16)
        assert len(s.done) == 4 and s.done[0].record["settings"]["batching"] == "per-face"
        outs.append(_outputs(out))
    assert outs[0] == outs[1]


def test_exact_restores_one_face_per_call_whatever_the_precision(tmp_path, tiny, crops, monkeypatch):
    """--exact: every face in its own restorer call (fp32 batches are only nearly batch-invariant: ±1 level in a few
    values on embedded-64, docs/results/batch_invariance.md), for aligned crops and whole photos; precision auto is
    then left to its own choice (bf16 where native: faster one face at a time); --exact with --fast-batches is refused."""
    import dynface.pipeline as pl
    from dynface.jobs import UsageError, _build_precision, per_face

    exact = RestoreSettings(exact=True)
    assert per_face(tiny, exact) and not per_face(tiny, RestoreSettings())
    monkeypatch.setattr(pl, "cpu_has_native_bf16", lambda: True)
    assert _build_precision(RestoreSettings(aligned=True, exact=True)) == "auto"
    assert _build_precision(RestoreSettings(aligned=True)) == "fp32"
    sizes: list[int] = []
    real = type(tiny).restore

    def counting(self, faces, **kw):
        sizes.append(len(faces))
        return real(self, faces, **kw)

    monkeypatch.setattr(type(tiny), "restore", counting)
    files = sorted(crops.glob("*.png"))[:4]
    s = run_job(files, tmp_path / "a", RestoreSettings(aligned=True, batch_size=4, threads=1, exact=True), restorer=tiny)
    assert len(s.done) == 4 and sizes == [1, 1, 1, 1]
    assert s.done[0].record["settings"]["batching"] == "per-face"
    astro = data.astronaut()
    d = tmp_path / "in"
    d.mkdir()
    for k in range(2):
        Image.fromarray(np.ascontiguousarray(astro[:, :: 1 - 2 * k])).save(d / f"p{k}.png")
    sizes.clear()
    s = run_job([d], tmp_path / "b", RestoreSettings(upscale=1, threads=1, exact=True), restorer=tiny)
    assert len(s.done) == 2 and sizes == [1, 1]
    sizes.clear()
    s = run_job([d], tmp_path / "c", RestoreSettings(upscale=1, threads=1), restorer=tiny)
    assert len(s.done) == 2 and sizes == [2]  # without --exact the two photos share a call
    with pytest.raises(UsageError, match="contradict"):
        run_job([d], tmp_path / "d", RestoreSettings(exact=True, deterministic=False), restorer=tiny)


class _Built:
    """A restorer as load_restorer sees one: a size and with_config."""

    def __init__(self, size: int, precision: str = "fp32"):
        self.size, self.precision = size, precision

    def with_config(self, precision):
        return _Built(self.size, precision)


BUILT = {"size": 128}


def make_built(**kw):
    return _Built(BUILT["size"])


@pytest.mark.parametrize("size,native,settings,want", [
    (128, True, {}, True), (64, True, {}, False), (128, False, {}, False), (256, True, {"precision": "fp32"}, False),
    (128, True, {"exact": True}, False), (128, True, {"device": "cuda"}, False),
    (128, True, {"deterministic": False}, False)])
def test_models_of_128_px_go_one_face_a_call_in_bf16_where_it_is_native(monkeypatch, size, native, settings, want):
    """jobs.BF16_FROM_SIZE: measured faster than fp32 batches for embedded-128 on 2 cores (1.39–1.46 against 1.71
    s/face); embedded-64 keeps fp32 batches; only for "auto" on a CPU, deterministic and not --exact (which resolves
    auto itself)."""
    from dynface import jobs, pipeline

    monkeypatch.setattr(pipeline, "cpu_has_native_bf16", lambda: native)
    s = RestoreSettings(**settings)
    assert jobs._per_face_bf16(s, _Built(size)) is want
    monkeypatch.setenv(jobs.FACTORY_ENV, "test_jobs:make_built")
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.setitem(BUILT, "size", size)
    assert jobs.load_restorer(s).precision == ("bf16" if want else "fp32")


def test_pipeline_seeds_and_callback(tiny, crops):
    faces = [np.asarray(Image.open(crops / f"f{k}.png")) for k in range(2)]
    calls: list[tuple[int, int]] = []
    both = tiny.restore(faces, seeds=[11, 22], callback=lambda s, n: calls.append((s, n)))
    alone = tiny.restore(faces[1:], seeds=[22]).images[0]
    swapped = tiny.restore(faces[::-1], seeds=[22, 11]).images
    assert np.array_equal(both.images[1], alone) and np.array_equal(swapped[0], alone)
    assert np.array_equal(swapped[1], both.images[0])
    assert [r["seed"] for r in both.records] == [11, 22]
    n = calls[0][1]
    assert calls == [(k, n) for k in range(1, n + 1)] and n == max(r["nfe"] for r in both.records)
    with pytest.raises(ValueError, match="seeds"):
        tiny.restore(faces, seeds=[1])


@pytest.mark.parametrize("aligned", [True, False])
def test_auto_precision_batches_faces_exactly_in_fp32(monkeypatch, aligned):
    """precision auto on a bf16-native CPU: faces go in exact fp32 batches (bf16 would have to go one face per call,
    which is slower), aligned crops and whole photos alike (photos batch across photos). An explicit --precision is
    never changed, nor is auto without deterministic. The precision is chosen once, in the arguments the restorer is
    built with (not changed on the built restorer)."""
    import dynface.pipeline as pl
    from dynface.jobs import load_restorer

    monkeypatch.setattr(pl, "cpu_has_native_bf16", lambda: True)
    monkeypatch.delenv("DYNFACE_RESTORER_FACTORY", raising=False)
    built_with: list[str] = []
    from_pretrained = pl.DynFaceRestorer.from_pretrained

    def spy(**kw):
        built_with.append(kw["precision"])
        return from_pretrained(**kw)

    monkeypatch.setattr(pl.DynFaceRestorer, "from_pretrained", spy)
    m64 = "embedded-64"  # 128 px and more: bf16 one face a call (test_models_of_128_px_go_one_face_a_call_in_bf16...)
    auto = load_restorer(RestoreSettings(model=m64, aligned=aligned, precision="auto"))
    assert auto.cfg.sampler.precision == "fp32"
    assert built_with == ["fp32"]
    assert load_restorer(RestoreSettings(model=m64, aligned=aligned, precision="bf16")).cfg.sampler.precision == "bf16"
    lone = load_restorer(RestoreSettings(model=m64, aligned=aligned, precision="auto", deterministic=False))
    assert lone.cfg.sampler.precision == "bf16"
    assert built_with == ["fp32", "bf16", "auto"]
    big = load_restorer(RestoreSettings(aligned=aligned, precision="auto"))  # embedded-128, the default
    assert (big.size, big.cfg.sampler.precision, built_with[-1]) == (128, "bf16", "fp32")


def test_auto_precision_of_aligned_crops_is_recorded_per_face(monkeypatch, tmp_path, crops):
    """The record of an aligned crop restored under auto (bf16-native CPU) says what was asked (auto) and what was
    used (fp32, in batches), in the settings and in the restorer's own record."""
    import dynface.pipeline as pl

    monkeypatch.setattr(pl, "cpu_has_native_bf16", lambda: True)
    monkeypatch.delenv("DYNFACE_RESTORER_FACTORY", raising=False)
    s = run_job([crops / "f0.png"], tmp_path / "o", RestoreSettings(model="embedded-64", aligned=True, steps="ddim2",
                                                                    threads=1))
    face = s.done[0].record["faces"][0]
    settings = s.done[0].record["settings"]
    assert (settings["precision"], settings["precision_used"], settings["batching"]) == ("auto", "fp32", "batched")
    assert face["restorer"]["precision"] == "fp32"
    s = run_job([crops / "f0.png"], tmp_path / "p", RestoreSettings(aligned=True, steps="ddim2", threads=1))
    settings = s.done[0].record["settings"]  # embedded-128: bf16 one face a call (jobs.BF16_FROM_SIZE)
    assert (settings["precision"], settings["precision_used"], settings["batching"]) == ("auto", "bf16", "per-face")


class _Brighten:
    """A restorer of ``size`` px (utkface64 framing) that brightens each face."""

    template_name, name = "utkface64", "fake"

    def __init__(self, size: int):
        self.size = size

    def restore(self, faces, seed=0, fidelity=None, return_maps=False, seeds=None):
        s = self.size
        imgs = [np.clip(np.asarray(Image.fromarray(np.asarray(f)).resize((s, s)), dtype=int) + 10, 0, 255).astype(np.uint8) for f in faces]
        return SimpleNamespace(images=imgs, records=[{"fake": True} for _ in imgs], maps={})


def test_aligned_size_record_and_detail_rule_are_the_photo_ones(tmp_path):
    """An aligned crop's size keys come from dynface.faces (face_size_record: the side in input pixels, rounded) and
    --detail keep applies exactly when faces.keeps_detail says so, on the recorded (rounded) side: a 311-px ffhq512
    crop is 199.003 px across in the utkface64 framing, recorded as 199.0, so a 199-px model does not keep its
    detail (the unrounded side > model_px said it did), while a 198-px one does."""
    from dynface.faces import estimate_affine, face_size_record, keeps_detail, template_for

    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(data.astronaut()[20:220, 120:320]).resize((311, 311), Image.LANCZOS).save(d / "c.png")
    for size, kept in ((199, False), (198, True)):
        s = run_job([d], tmp_path / f"o{size}", RestoreSettings(aligned=True, input_template="ffhq512"), restorer=_Brighten(size))
        face = s.done[0].record["faces"][0]
        want = face_size_record(estimate_affine(template_for("ffhq512", 311), template_for("utkface64", size)), size, None)
        assert {k: face[k] for k in want} == want and "crop_side_out_px" not in face
        assert face["crop_side_px"] == 199.0 and face["detail_kept"] is kept is keeps_detail(face)
        assert ("detail_cut_cycles" in face) is kept
        assert Image.open(tmp_path / f"o{size}" / "restored_faces" / "c.png").size == (311, 311)
    # a crop taken in the model's own framing: its own side, returned at its size
    s = run_job([d], tmp_path / "plain", RestoreSettings(aligned=True, input_template=None), restorer=_Brighten(64))
    face = s.done[0].record["faces"][0]
    assert [face[k] for k in ("crop_side_px", "model_px", "scale_to_model", "detail_kept")] == [311.0, 64, 0.2058, True]


def test_max_pixels_refuses_an_over_cap_input_and_the_batch_goes_on(tmp_path, tiny, crops):
    """RestoreSettings.max_pixels caps every read of the job layer, whichever decoder reads the file (a PNG:
    Pillow; a PAM: OpenCV only): the over-cap inputs fail with the one 'too large' line, the others are restored."""
    import cv2

    d = tmp_path / "in"
    d.mkdir()
    big = np.asarray(Image.open(crops / "f0.png").resize((64, 64), Image.LANCZOS))  # 4096 px > 3000
    Image.fromarray(big).save(d / "big.png")
    (d / "big.pam").write_bytes(cv2.imencode(".pam", np.ascontiguousarray(big[:, :, ::-1]))[1].tobytes())
    files = [crops / "f0.png", d / "big.png", crops / "f1.png", d / "big.pam"]  # 48x48 = 2304 px: under the cap
    s = run_job(files, tmp_path / "o", RestoreSettings(aligned=True, threads=1, max_pixels=3000), restorer=tiny)
    refused = "image too large (64x64 = 0.0041 MP; the limit is 0.003 MP)"
    assert [(Path(r.path).name, r.status, r.error) for r in s.results] == [
        ("f0.png", "done", None), ("big.png", "failed", refused), ("f1.png", "done", None), ("big.pam", "failed", refused)]
    assert sorted(p.name for p in (tmp_path / "o" / "restored_faces").iterdir()) == ["f0.png", "f1.png"]
    # whole photos too: refused before any face detection or restoring
    p = run_job([d / "big.pam"], tmp_path / "p", RestoreSettings(threads=1, max_pixels=3000), restorer=tiny)
    assert [(r.status, r.error) for r in p.results] == [("failed", refused)]
    # without the setting: imageio's default cap, which the CLI keeps
    assert run_job([d / "big.pam"], tmp_path / "q", RestoreSettings(aligned=True, threads=1), restorer=tiny).done


def test_max_pixels_default_is_imageios_and_is_checked():
    from dynface import imageio
    from dynface.jobs import UsageError, check_settings

    assert RestoreSettings().max_pixels == imageio.MAX_PIXELS  # jobs keeps its own copy (no torch import on --help)
    from dynface.faces import BORDER_VALUE, DEFAULT_BORDER, warp_face

    # the border default (docs/results/border.md): the job layer's copy is faces' (jobs does not import faces), and
    # a crop reaching past the photo's edge is filled with the photo mirrored, not facexlib's grey
    assert RestoreSettings().border == DEFAULT_BORDER == "reflect"
    ramp = np.tile(np.arange(0, 250, 5, dtype=np.uint8)[:, None, None], (1, 50, 3))  # rows 0, 5, ..., 245
    crop = warp_face(ramp, np.array([[1.0, 0, 0], [0, 1, 25]]), 50)  # shifted down: the top 25 rows lie outside
    assert not (crop == np.array(BORDER_VALUE, np.uint8)).all(-1).any() and crop[0, 0, 0] == 125
    for bad in (0, -1, 1.5, "40e6", True):
        with pytest.raises(UsageError, match="max_pixels"):
            check_settings(RestoreSettings(max_pixels=bad))


def test_restorer_key_tells_apart_settings_that_build_different_restorers():
    """The web app's restorer cache key: deterministic (fp32 batches under auto) and compile change the restorer;
    output-only settings (upscale, suffix, detail) and aligned (photos and crops both get fp32 under auto) do not."""
    from dynface.jobs import restorer_key

    base = RestoreSettings(precision="auto")
    assert restorer_key(base) == restorer_key(RestoreSettings(precision="auto", aligned=True))
    assert restorer_key(base) != restorer_key(RestoreSettings(precision="auto", deterministic=False))
    assert restorer_key(base) != restorer_key(RestoreSettings(precision="auto", compile=True))
    assert restorer_key(base) != restorer_key(RestoreSettings(precision="auto", guidance="unet"))
    assert restorer_key(base) == restorer_key(RestoreSettings(precision="auto", upscale=4, suffix="x", detail="restored"))


def test_the_job_layers_light_option_lists_match_the_library():
    """jobs keeps its own --color-fix / --detail lists (so `dynface --help` imports neither torch nor scipy);
    they must name exactly what colorfix and detail implement."""
    from dynface import colorfix, detail, grain, jobs

    assert set(jobs.COLOR_FIXES) == set(colorfix.COLOR_FIXES)
    assert set(jobs.DETAIL_MODES) == set(detail.DETAIL_MODES)
    assert set(jobs.GRAIN_MODES) == set(grain.GRAIN_MODES)


def test_the_job_layers_choices_match_the_library():
    """jobs keeps torch-free copies of the modes, precisions and colour fixes (for the CLI); they must not drift."""
    from dynface import colorfix, jobs, pipeline

    assert jobs.MODES == pipeline.MODES
    assert set(jobs.COLOR_FIXES) == set(colorfix.COLOR_FIXES)
    for p in jobs.PRECISIONS:
        assert pipeline.resolve_precision(p) in ("fp32", "bf16", "fp16")
    with pytest.raises(ValueError):
        pipeline.resolve_precision("fp8")


@pytest.mark.parametrize("native", [True, False])
def test_precision_warnings_follow_the_cpu(monkeypatch, native):
    """bf16 is fast only on CPUs that compute it natively (×0.6–0.8 of fp32); elsewhere it is emulated and ×20 slower
    (measured on this AMD EPYC), and the warning must not recommend it."""
    import dynface.pipeline
    from dynface.jobs import settings_warnings

    monkeypatch.setattr(dynface.pipeline, "cpu_has_native_bf16", lambda: native)
    (fp16,) = settings_warnings(RestoreSettings(precision="fp16"))
    assert "emulated and slow" in fp16 and ("bf16 is the fast choice" in fp16) == native and ("fp32" in fp16)
    bf16 = settings_warnings(RestoreSettings(precision="bf16"))
    assert bf16 == ([] if native else [bf16[0]]) and all("×20" in w and "fp32" in w for w in bf16)
    assert settings_warnings(RestoreSettings(precision="fp32")) == settings_warnings(RestoreSettings()) == []
    assert settings_warnings(RestoreSettings(precision="bf16", device="cuda")) == []


def test_fidelity_0_warns_that_identity_is_not_kept():
    """-w 0 is the prior alone: a helper's photo came back as other people, with no word of warning."""
    from dynface.jobs import settings_warnings

    (w0,) = settings_warnings(RestoreSettings(fidelity=0.0))
    assert "no guidance" in w0 and "identity" in w0
    assert settings_warnings(RestoreSettings(fidelity=0.0, mode="restorer_only")) == []
    assert settings_warnings(RestoreSettings(fidelity=0.1)) == []


def test_a_replaced_record_takes_the_outputs_only_it_listed_with_it(tmp_path):
    """write_record removes what the record it replaces listed and the new one does not (a photo restored again with
    fewer faces or another --ext), never a file outside the output folder's output sub-folders."""
    from dynface.jobs import write_record

    out = tmp_path / "out"
    for rel in ("restored_imgs/p.png", "restored_faces/p_00.png", "restored_faces/p_01.png", "cmp/p_01.png"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(b"x")
    (tmp_path / "keep.png").write_bytes(b"x")
    old = {"status": "ok", "restored_img": "restored_imgs/p.png", "faces": [
        {"files": {"restored_face": "restored_faces/p_00.png"}},
        {"files": {"restored_face": "restored_faces/p_01.png", "cmp": "cmp/p_01.png", "evil": "../keep.png"}}]}
    write_record(out, "p", old)
    assert (out / "restored_faces" / "p_01.png").is_file()  # a first record removes nothing
    new = {"status": "ok", "restored_img": "restored_imgs/p.png", "faces": [{"files": {"restored_face": "restored_faces/p_00.png"}}]}
    write_record(out, "p", new)
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert left == ["records/p.json", "restored_faces/p_00.png", "restored_imgs/p.png"]
    assert (tmp_path / "keep.png").is_file()


def test_run_job_refuses_bad_settings_before_it_makes_the_output_folder(tmp_path, monkeypatch):
    """A misspelt alignment/border/detector failed every input one by one; an unknown model or an unusable device was
    a UsageError only after the output folder and its sub-folders were made; a str seed or upscale gave a raw
    TypeError; one path given as a str was taken as a sequence of one-letter inputs."""
    from dynface.jobs import FACTORY_ENV, UsageError

    monkeypatch.delenv(FACTORY_ENV, raising=False)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(src / "a.png")
    out = tmp_path / "out"
    cases = [(dict(model="no-such-model"), "neither an embedded model"), (dict(alignment="ffhqq"), "--alignment must be"),
             (dict(border="reflekt"), "--border must be"), (dict(detector="hogg"), "--detector must be"),
             (dict(seed="1"), "got '1'"), (dict(seed=True), "--seed"), (dict(upscale="2"), "--upscale must be a number"),
             (dict(fidelity=float("nan")), "--fidelity")]
    if not torch.cuda.is_available():
        cases.append((dict(device="cuda"), "no CUDA device"))
    for kw, message in cases:
        with pytest.raises(UsageError, match=message):
            run_job(str(src), out, RestoreSettings(aligned=True, **kw))
        assert not out.exists(), kw


def test_run_job_refuses_settings_its_given_restorer_was_not_built_with(tmp_path, tiny_dsst):
    """run_job(settings, restorer=r) used r as built and silently ignored a mode, steps or colour fix the settings
    asked for (the records said r's). Now that is a UsageError naming them; settings that agree, or leave them to the
    restorer, run."""
    from dynface.pipeline import DynFaceRestorer

    r = DynFaceRestorer.from_preset("tiny", dsst=tiny_dsst).with_config(steps="ddim10")
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(d / "a.png")
    from dynface import jobs

    with pytest.raises(jobs.UsageError, match=r"mode='restorer_only' \(the restorer's: 'full'\), steps='ddim25'"):
        jobs.run_job([d], tmp_path / "o", jobs.RestoreSettings(aligned=True, mode="restorer_only", steps="ddim25"),
                     restorer=r)
    assert not (tmp_path / "o").exists()
    s = jobs.run_job([d], tmp_path / "o", jobs.RestoreSettings(aligned=True, steps="ddim10"), restorer=r)
    assert [x.status for x in s.results] == ["done"]
