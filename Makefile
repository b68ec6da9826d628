# The two commands of the README: `make run` and `make test`.
.PHONY: install run test bench

install:
	scripts/install.sh

run: install
	.venv/bin/finishline run

test:
	scripts/install.sh --test
	scripts/test.sh
