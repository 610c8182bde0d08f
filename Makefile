# flux-pam-service
#
#   make deps       install what the tests need (apt, pip); run as root
#   make check      run every test tier; the last line is "N passed, N failed, N skipped"
#   make install    install into $(DESTDIR)$(PREFIX); see doc/guide/admin.rst
#   make uninstall  remove what install put there
#   make bench      run the benchmarks in bench/

PYTHON = /usr/bin/python3
VENV ?= $(CURDIR)/.venv

.PHONY: deps check lint bench install uninstall

deps:
	scripts/install-deps

check:
	$(VENV)/bin/python t/runtests.py

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench:
	$(VENV)/bin/python bench/run.py

include mk/install.mk
