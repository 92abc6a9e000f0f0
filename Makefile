# Pigeon: two commands on a fresh machine.
#   make demo   install what is missing, start the lab, run a blue/green deployment of the demo app
#   make test   install what is missing, start the lab, run every test (then the multi-host lab's)
SHELL := /bin/bash
VENV := $(or $(PIGEON_VENV),.lab/venv)
# single (the default): one minion on this machine's docker; multi: five hosts (docs/lab-multihost.md)
TOPOLOGY ?= single
PY := $(VENV)/bin/python

.PHONY: demo lab down status test unit integration multihost bench install clean sync vagrant

install:
	bootstrap/install.sh

lab:
	TOPOLOGY=$(TOPOLOGY) bootstrap/lab.sh up

down:
	bootstrap/lab.sh down

status:
	bootstrap/lab.sh status

demo: lab
	bootstrap/demo.sh

unit: install
	$(PY) -m pytest -q tests/unit

integration: lab
	$(PY) -m pytest -q tests/integration

test: lab vagrant
	$(PY) -m pytest tests/unit tests/integration -p no:cacheprovider -rs
	$(MAKE) multihost

# the multi-host lab (TOPOLOGY=multi, docs/lab-multihost.md): up, its tests, down (whatever they say);
# its last test takes it down and checks that nothing of it is left
multihost:
	rc=0; $(MAKE) lab TOPOLOGY=multi && PIGEON_MULTIHOST_DOWN=1 $(PY) -m pytest tests/multihost -p no:cacheprovider -rs \
	  || rc=$$?; bootstrap/lab.sh down >/dev/null || { echo "make multihost: the lab did not go down cleanly: bootstrap/lab.sh down" >&2; rc=1; }; exit $$rc

# `vagrant validate` checks the Vagrantfile in the tests (no VirtualBox needed)
vagrant:
	@command -v vagrant >/dev/null || { echo "==> installing vagrant (Debian package)"; \
	  apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends vagrant >/dev/null; }

bench: lab
	$(PY) tests/bench/bench.py --cycles 20 --clients 1 --rps 400 --json docs/benchmarks-400rps.json
	$(PY) tests/bench/idle.py --seconds 60 --json docs/benchmarks-idle.json
	$(PY) tests/bench/progressive.py --rounds 5 --json docs/benchmarks-progressive.json
	$(MAKE) lab TOPOLOGY=multi   # takes the one-host lab down first; make lab brings it back
	$(PY) tests/bench/multihost.py --rounds 5 --json docs/benchmarks-multihost.json

clean: down
	rm -rf .lab

# after editing srv/: push Pigeon's modules to the lab's master and minions
sync:
	$(VENV)/bin/salt-run -c .lab/etc/salt saltutil.sync_all >/dev/null
	$(VENV)/bin/salt -c .lab/etc/salt '*' saltutil.sync_all >/dev/null
