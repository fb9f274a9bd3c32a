# omnistock developer entry points. Private PostgreSQL/Redis/NATS instances are
# managed by scripts/services.sh; their state lives in .omnistock/.
SHELL := /bin/bash

.PHONY: run test services-up services-down services-status clean

## run: start services (instance run), build, migrate, import demo data, serve on 127.0.0.1:8080
run:
	bash scripts/run-demo.sh

## test: cargo fmt --check, clippy -D warnings and the tests against instance test
test:
	bash scripts/test.sh

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
	rm -rf .omnistock
