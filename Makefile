# The two commands of the README.
.PHONY: dev test build setup

dev: ## Sets up, builds and runs the gateway with a demo IdP and origin on 127.0.0.1:8787
	bash scripts/dev.sh

test: ## Every check and test, from a fresh machine
	bash scripts/test.sh

build:
	bash scripts/build.sh

setup:
	bash scripts/setup.sh
