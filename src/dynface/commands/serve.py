"""``dynface serve``: the local web app (Gradio) for restoring faces in a browser.

Listens on 127.0.0.1:7860 by default: only this machine can open the page. ``--host 0.0.0.0`` (or any address
that is not a loopback one) also needs ``--allow-remote``: then anyone who can reach that address can upload
images, run restorations on this machine's CPU/GPU and download the results (there is no login), though never
read the server's files or load weights of their own (see :mod:`dynface.webapp`).

Models: the embedded ones, plus each model folder found in the ``--models DIR`` directories (the allow list:
clients pick a name from it, never a path). Runs offline: no analytics, no telemetry, no web fonts.
Exit status: 0 after a clean stop (Ctrl-C), 2 for usage errors (bad flags, a remote bind without
``--allow-remote``, a port in use).
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from pathlib import Path

from dynface.commands import sigterm_as_ctrl_c
from dynface.commands.argtypes import number


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="start the local web app (browser page + API) for restoring faces",
        description="Start the DynFaceRestore web app (Gradio). Open the printed URL in a browser.",
        epilog="Binding beyond localhost needs --allow-remote; see README 'Web app'. Details: pydoc dynface.commands.serve",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=number(int, 1, 65535, noun='a port number'), default=7860, help="port (default: 7860)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a --host that other machines can reach (e.g. 0.0.0.0): anyone who reaches it can use the app")
    p.add_argument("--models", action="append", default=[], metavar="DIR",
                   help="a directory of model folders to offer (repeatable); clients choose by name only")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "mps"), help="compute device (default: cpu)")
    p.add_argument("--concurrency", type=number(int, 0, lo_open=True), default=1,
                   help="jobs run at the same time (default 1; others wait in the queue and see their place)")
    p.add_argument("--max-upload-mb", type=number(float, 0, lo_open=True), default=25.0, help="largest upload, per file (default: 25 MB); a larger file gets its own line and the others are "
                        "restored (up to 8 times this; beyond that the browser's whole selection is refused)")
    p.add_argument("--max-video-mb", type=number(float, 0, lo_open=True), default=200.0,
                   help="largest video upload (default: 200 MB)")
    p.add_argument("--max-video-seconds", type=number(float, 0, lo_open=True), default=10.0,
                   help="seconds of a video restored per request (default: 10; about 1.4 s per face and frame on "
                        "2 CPU cores: keep it within --time-limit)")
    p.add_argument("--max-megapixels", type=number(float, 0, lo_open=True), default=40.0, help="largest decoded image, per file (default: 40 MP)")
    p.add_argument("--max-files", type=number(int, 0, lo_open=True), default=16, help="files per request (default: 16)")
    p.add_argument("--time-limit", type=number(float, 0, lo_open=True), default=900.0, help="seconds per request (default: 900)")
    p.add_argument("--keep-minutes", type=number(float, 0, lo_open=True), default=60.0,
                   help="uploads and results are deleted this long after a request (default: 60)")
    p.add_argument("-q", "--quiet", action="store_true", help="less output")
    p.set_defaults(func=run)


def is_local_host(host: str) -> bool:
    """True when every address ``host`` stands for is a loopback address (reachable from this machine only)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addrs = {i[4][0] for i in infos}
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def cannot_listen(host: str, port: int) -> str | None:
    """Why the server could not listen on ``host:port`` (say, another server has it), or None. The probe sets
    SO_REUSEADDR as the server itself does, so the connections a stopped server left in TIME_WAIT (for a minute
    after its last request) do not count as the port being in use."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host if host != "localhost" else "127.0.0.1", port))
        except OSError as e:
            return e.strerror or str(e)
    return None


def run(args: argparse.Namespace) -> int:
    if not is_local_host(args.host) and not args.allow_remote:
        print(f"error: --host {args.host} can be reached from other machines; add --allow-remote if that is what you "
              "want (anyone who reaches it can use the app: see README 'Web app')", file=sys.stderr)
        return 2
    for d in args.models:
        if not Path(d).expanduser().is_dir():
            print(f"error: --models {d}: not a directory", file=sys.stderr)
            return 2
    why = cannot_listen(args.host, args.port)
    if why:
        print(f"error: cannot listen on {args.host}:{args.port}: {why}", file=sys.stderr)
        return 2

    from dynface.webapp import quiet_environment

    quiet_environment()
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="dynface-web-"))
    import os

    os.environ["GRADIO_TEMP_DIR"] = str(work / "uploads")  # before gradio is imported: its cache lives here too
    import warnings

    from PIL import Image

    from dynface.webapp import ServerConfig, WebApp, launch

    max_pixels = int(args.max_megapixels * 1e6)
    Image.MAX_IMAGE_PIXELS = max_pixels  # whatever decodes an upload (Gradio's image box too) stops at the cap
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    cfg = ServerConfig(
        models_dirs=tuple(Path(d) for d in args.models), device=args.device, max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_video_bytes=int(args.max_video_mb * 2**20), max_video_s=args.max_video_seconds,
        max_pixels=max_pixels, max_files=args.max_files, time_limit_s=args.time_limit, keep_s=args.keep_minutes * 60,
        concurrency=args.concurrency, work_dir=work / "requests", upload_root=work / "uploads",
    )
    app = WebApp(cfg)
    if not app.models:
        print("error: no models to offer (the embedded weights are missing and --models found none)", file=sys.stderr)
        app.close()
        return 2
    shown = "localhost" if args.host in ("127.0.0.1", "localhost") else args.host
    print(f"dynface serve: open http://{shown}:{args.port}/ (models: {', '.join(app.models)}; Ctrl-C stops)", flush=True)
    if not is_local_host(args.host):
        print("note: reachable from other machines (--allow-remote): anyone who reaches this address can use it",
              file=sys.stderr, flush=True)
    restore_sigterm = sigterm_as_ctrl_c()  # SIGTERM stops like Ctrl-C, so the work folder is removed
    try:
        launch(app, host=args.host, port=args.port, quiet=args.quiet, block=True)
    except KeyboardInterrupt:
        pass
    finally:
        import shutil

        if not app.shutdown(wait_s=0.5):  # a request is running: it stops at its next sampling step
            print("stopping: waiting for the running request to stop", file=sys.stderr, flush=True)
            if not app.shutdown(wait_s=60):
                print("warning: the running request did not stop within 60 s; exiting anyway", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
        restore_sigterm()
    return 0
