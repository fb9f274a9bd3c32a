# omnistock developer entry points. Private PostgreSQL/Redis/NATS instances are
# managed by scripts/services.sh; their state lives in .omnistock/.
SHELL := /bin/bash

.PHONY: run test chaos fuzz bench bench-quick services-up services-down services-status clean

## run: start services (instance run), build, migrate, import demo data, serve on 127.0.0.1:8080
run:
	bash scripts/run-demo.sh

## test: cargo fmt --check, clippy -D warnings and the tests against instance test
test:
	bash scripts/test.sh

## chaos: the long fault-injection form: 20 kill -9 rounds during 100,000 movements, plus the
## PostgreSQL, Redis and NATS outages, each test on private servers of its own
chaos:
	bash scripts/chaos.sh

## fuzz: one hour of libFuzzer on the movement decoder (FUZZ_SECONDS, FUZZ_JOBS override)
fuzz:
	bash scripts/fuzz.sh long

## bench: the same-run benchmark on the durable instance `bench`: this machine's ceilings, then
## omnistock on the demo data, 1M and 10M stock rows; writes docs/performance.md (see README
## "Benchmarks"; BENCH_SCALES, BENCH_QUICK, BENCH_KEEP override)
bench:
	bash scripts/bench.sh

## bench-quick: the same harness on small data with short runs (proves it works; not figures to quote)
bench-quick:
	BENCH_QUICK=1 bash scripts/bench.sh

services-up:
	bash scripts/services.sh start run

services-down:
	bash scripts/services.sh stop run

services-status:
	-bash scripts/services.sh status run

## clean: stop both instances and delete all their state (.omnistock/)
clean:
	bash scripts/services.sh clean run
	bash scripts/services.sh clean test
	bash scripts/services.sh clean bench
	rm -rf .omnistock
