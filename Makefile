# refinery: `make shards` and `make test` set everything up on a fresh clone.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

IN ?= tests/data/sample
OUT ?= data/shards
CONFIG ?= infra/configs/sample.yaml
RUN ?= data/runs/tiny
PREFECT_PORT ?= 4200
PREFECT_HOME_DIR ?= data/prefect
POOL ?= refinery-process
API := http://127.0.0.1:$(PREFECT_PORT)/api

export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90

.PHONY: setup shards pretrain ablate test test-crash lint format s3 server server-stop worker deploy sample bench bench-venv bench-dedup bench-langid bench-filters bench-extract bench-urls bench-augment bench-orchestration bench-e2e bench-scale bench-gpu calibrate-quality clean help

help:
	@echo "make shards   run the prepare flow on the bundled sample (IN=, OUT=, CONFIG= to override)"
	@echo "make pretrain train the tiny model on those shards (2 CPU ranks, DeepSpeed ZeRO-2)"
	@echo "make ablate   compare three data recipes on the sample by training the tiny model on each (CPU)"
	@echo "make test     run the test suite"
	@echo "make test-crash  kill prepare with SIGKILL 22 times (seeded), check each resumed run"
	@echo "make lint     ruff check and format check"
	@echo "make s3       start a local S3 API (moto) on 127.0.0.1:5000 with a bucket 'refinery'"
	@echo "make server   start a local Prefect server (UI http://127.0.0.1:4200); server-stop stops it"
	@echo "make worker   start a process worker for the deployments"
	@echo "make deploy   register the Prefect deployments in infra/prefect.yaml"
	@echo "make setup    create .venv with the pinned dependencies (done by shards/test when needed)"
	@echo "make bench-dedup  near-dup removal vs datasketch, rensa and datatrove (one core each)"
	@echo "make bench-langid language ID accuracy, refinery vs raw fastText"
	@echo "make bench-filters language ID + quality throughput vs raw fastText and datatrove"
	@echo "make bench-extract text extraction F1 and speed vs raw trafilatura and jusText, and what normalize changes"
	@echo "make bench-urls   URL filter false and true positives vs datatrove's URLFilter"
	@echo "make bench-augment augment stage cost per 1,000 documents on CPU (tiny random models)"
	@echo "make bench-orchestration  prepare's wall time, memory and Prefect database by partition count"
	@echo "make bench-e2e  prepare end to end against datatrove's FineWeb pipeline on the same WARC files"
	@echo "make bench-scale  dedup reduce steps at 1M and 10M documents, then the constants and the 1 TB / 100 TB projection"
	@echo "make bench-gpu  pretraining tokens/s, MFU and peak memory per preset and ZeRO stage vs a plain PyTorch loop (tiny on CPU)"
	@echo "make calibrate-quality  recompute the zh/ja quality thresholds"

setup: $(STAMP)

# Order matters: torch (CPU build) first so nothing pulls a CUDA one, then deepspeed built
# against it without isolation, then the rest under the full set of constraints.
$(STAMP): pyproject.toml infra/requirements.txt infra/requirements-test.txt infra/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==26.3 setuptools==84.2.1 wheel==0.48.0
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c infra/constraints.txt numpy ninja packaging psutil py-cpuinfo pydantic hjson
	$(BIN)/pip install --quiet --no-build-isolation -c infra/constraints.txt deepspeed==0.19.8
	$(BIN)/pip install --quiet -r infra/requirements.txt -c infra/constraints.txt
	$(BIN)/pip install --quiet -r infra/requirements-test.txt -c infra/constraints.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

shards: $(STAMP)
	$(BIN)/refinery prepare --input $(IN) --output $(OUT) --config $(CONFIG)

# Trains on the token shards `make shards` wrote; continues from the latest checkpoint if any.
pretrain: $(STAMP)
	@test -f $(OUT)/tokens/manifest.json || { echo "make pretrain: no token shards in $(OUT): run make shards first"; exit 2; }
	$(BIN)/refinery pretrain --tokens $(OUT)/tokens --run $(RUN) --config $(CONFIG) --resume

# Three recipes of infra/recipes/sample.yaml on the sample; resumes a killed ablation.
RECIPES ?= infra/recipes/sample.yaml
ABLATE ?= data/ablate
ablate: $(STAMP)
	$(BIN)/refinery ablate --recipes $(RECIPES) --output $(ABLATE)

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not gpu" --timeout 900

# Kills `refinery prepare` on the sample at failpoints and at random moments, resumes it and
# compares with a clean run; fails unless every trial matches. CRASH_TRIALS=, CRASH_SEED=.
CRASH_TRIALS ?= 22
CRASH_SEED ?= 0
test-crash: $(STAMP)
	$(BIN)/python bench/crash.py --trials $(CRASH_TRIALS) --seed $(CRASH_SEED)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

server: $(STAMP)
	$(BIN)/python -m flows.server start --port $(PREFECT_PORT) --home $(PREFECT_HOME_DIR)

server-stop:
	$(BIN)/python -m flows.server stop --home $(PREFECT_HOME_DIR)

worker: $(STAMP)
	PREFECT_API_URL=$(API) $(BIN)/prefect worker start --pool $(POOL) --type process

deploy: $(STAMP)
	PREFECT_API_URL=$(API) $(BIN)/prefect work-pool create $(POOL) --type process --overwrite
	PREFECT_API_URL=$(API) $(BIN)/prefect --no-prompt deploy --all --prefect-file infra/prefect.yaml

# A local S3 API (moto's server) to try `--output s3://refinery/...` against: run the printed
# export line in another shell; the bucket `refinery` is made once the server is up.
S3_PORT ?= 5000
S3_ENV := AWS_ENDPOINT_URL_S3=http://127.0.0.1:$(S3_PORT) AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
s3: $(STAMP)
	@echo "export $(S3_ENV)"
	@(sleep 3; $(S3_ENV) $(BIN)/python -c "import s3fs; s3fs.S3FileSystem().mkdir('refinery')") &
	$(BIN)/moto_server -H 127.0.0.1 -p $(S3_PORT)

# Rebuild the bundled sample corpus from the source data sets named in tests/data/NOTICE
# (not needed to use refinery): make sample SHARED=/path/to/data
sample: $(STAMP)
	@test -n "$(SHARED)" || { echo "make sample: set SHARED=<folder with the source data sets>"; exit 2; }
	$(BIN)/python tests/data/make_sample.py --shared $(SHARED) --out tests/data/sample

bench: $(STAMP)
	$(BIN)/python bench/rerun.py
	$(BIN)/python bench/loader.py

# Peers a bench compares against live in their own virtualenv, never in .venv.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
bench-venv: $(BENCH_STAMP)
$(BENCH_STAMP): bench/requirements-bench.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet -r bench/requirements-bench.txt
	touch $(BENCH_STAMP)

# DEDUP_DOCS: corpus sizes of the side-by-side run.
DEDUP_DOCS ?= 10000 100000
bench-dedup: $(STAMP) $(BENCH_STAMP)
	$(BIN)/python bench/dedup.py $(foreach n,$(DEDUP_DOCS),--docs $(n))

# The dedup reduce steps on SCALE_DOCS generated keys in SCALE_RANGES hash ranges (about 10
# minutes and 9 GB of disk at 10M), then bench/at_scale.py: three `prepare` runs of the e2e
# WARC files on one core, the constants of a large run and its projection to 1 and 100 TB.
SCALE_DOCS ?= 1000000 10000000
SCALE_RANGES ?= 1 8
# On a machine with CUDA: presets 125M, 350M and 1.3B; without: the tiny preset on CPU.
bench-gpu: $(STAMP)
	$(BIN)/python bench/gpu.py

bench-scale: $(STAMP)
	$(BIN)/python bench/dedup_scale.py --docs $(SCALE_DOCS) --ranges $(SCALE_RANGES)
	$(BIN)/python bench/at_scale.py

# The labelled texts are in bench/data (sources and licences in bench/data/NOTICE).
bench-langid: $(STAMP)
	$(BIN)/python bench/langid_accuracy.py

# FILTER_DOCS: English documents of about 4.5 KB; FILTER_WORKERS: processes of the quality runs.
FILTER_DOCS ?= 4000
FILTER_WORKERS ?= 2
bench-filters: $(STAMP) $(BENCH_STAMP)
	$(BIN)/python bench/filters.py --docs $(FILTER_DOCS) --workers $(FILTER_WORKERS)

# The scrapinghub article extraction pages are in bench/data (source and licence in
# bench/data/NOTICE); the peers are in .venv, no .venv-bench needed.
bench-extract: $(STAMP)
	$(BIN)/python bench/extract.py

# Ordinary URLs from tests/data/urls, adult ones from UT1's lists in datatrove's package.
bench-urls: $(STAMP) $(BENCH_STAMP)
	$(BIN)/python bench/urls.py

# The English Wikipedia paragraphs of the sample and of bench/data; the models are tiny
# random-weight ones the script builds (tests/tiny_seq2seq.py), so nothing is downloaded.
bench-augment: $(STAMP)
	$(BIN)/python bench/augment.py

# Orchestration cost of `prepare` against the partition count: 10,000 generated documents
# (45 MB of JSONL) in 4 and 500 partitions (ORCH_PARTITIONS=; 2000 works too), with the
# thread and the process runner (ORCH_RUNNERS=), a fresh temporary Prefect server per run.
ORCH_PARTITIONS ?= 4 500
ORCH_RUNNERS ?= local process
bench-orchestration: $(STAMP)
	for runner in $(ORCH_RUNNERS); do \
	  $(BIN)/python bench/orchestration.py --runner $$runner \
	    $(foreach n,$(ORCH_PARTITIONS),--partitions $(n)) || exit 1; done

# refinery prepare against datatrove's FineWeb pipeline on the same generated WARC files
# (E2E_PAGES pages made from the real pages in bench/data and tests/data), 1 and 2 workers.
E2E_PAGES ?= 1200
bench-e2e: $(STAMP) $(BENCH_STAMP)
	$(BIN)/python bench/e2e.py --pages $(E2E_PAGES) --json data/bench/e2e/results.json

# Quantile-matches the zh and ja quality thresholds on the Wikipedia paragraphs in bench/data
# and writes them to tasks/resources/quality_languages.yaml.
calibrate-quality: $(STAMP)
	$(BIN)/python bench/calibrate_quality.py --write

clean:
	rm -rf data/shards data/runs .pytest_cache
