# SPDX-License-Identifier: GPL-2.0
# UPM: build, boot and test the patched Linux 6.12 kernel. `make help`.

SHELL := /bin/bash
FLAVOUR ?= debug
export FLAVOUR KSRC MEM CPUS TIMEOUT ACCEL NUMA APPEND CMD STRESS_SECONDS \
	STRESS_SEED SWEEP COUNTS KSM_COUNTS KSM_CAP
BUILD := $(CURDIR)/build
S := $(CURDIR)/scripts

.PHONY: help deps tree kernel selftests headers vm shell run demo test check bisect \
	stress patch refresh bench kunit clean distclean

help:
	@echo 'UPM make targets:'
	@echo '  run        serverless density: none, KSM and UPM (SWEEP=full: all counts)'
	@echo '  demo       two processes, one madvise each: UPM merging at once'
	@echo '  test       everything CI checks: deps, debug kernel, guest tests, check'
	@echo '  bench      UPM against KSM, seven microbenchmarks (release kernel)'
	@echo '  stress     only the UPM stress (STRESS_SECONDS=1800 STRESS_SEED=n)'
	@echo '  deps       install missing Debian packages (apt)'
	@echo '  tree       unpack 6.12, apply patches/series, overlay our files'
	@echo '  kernel     build bzImage (FLAVOUR=debug|release)'
	@echo '  selftests  build the UPM and upstream KSM selftests'
	@echo '  headers    install patched UAPI headers, print the include dir'
	@echo "  vm         run CMD='...' in the guest (MEM=4G CPUS=2 TIMEOUT=1800)"
	@echo '  shell      interactive guest shell'
	@echo '  patch      write a format-patch series and one combined patch'
	@echo '  check      checkpatch, kernel-doc, W=1, sparse, each step builds, kunit'
	@echo '  bisect     build each step of the series (part of check)'
	@echo '  kunit      the KUnit suite through tools/testing/kunit/kunit.py'
	@echo '  refresh    regenerate patches/ from edits in build/linux'
	@echo '  clean      remove kernel objects, keep the unpacked source'
	@echo '  distclean  remove build/ entirely'
	@echo 'Variables: KSRC=/path/to/6.12-tree FLAVOUR MEM CPUS TIMEOUT ACCEL=kvm|tcg'
	@echo '           NUMA=nodes STRESS_SECONDS STRESS_SEED (test, stress)'

deps:
	@$(S)/deps.sh

tree: deps
	@$(S)/prepare-tree.sh

kernel: tree
	@$(S)/build-kernel.sh $(FLAVOUR)

headers: tree
	@$(S)/headers.sh

selftests: headers
	@$(S)/build-selftests.sh

vm: kernel
	@$(S)/vm.sh "$$CMD"

shell: kernel
	@$(S)/vm.sh --interactive

# make run uses the release kernel unless FLAVOUR= is given.
run: FLAVOUR = release
run: kernel
	@$(S)/run.sh

demo: kernel headers
	@$(S)/demo.sh

# Always on the release kernel, whatever FLAVOUR says; MEM=8G by default.
bench:
	@$(MAKE) --no-print-directory kernel headers FLAVOUR=release
	@$(S)/bench.sh

test: kernel selftests
	@$(S)/run-tests.sh

stress: kernel selftests
	@$(S)/run-stress.sh

check: tree
	@$(S)/check.sh

patch: tree
	@$(S)/make-patch.sh

bisect: patch
	@$(S)/check-series.sh

kunit: tree
	@$(S)/kunit.sh

refresh:
	@$(S)/refresh.sh

clean:
	rm -rf $(BUILD)/obj-* $(BUILD)/selftests $(BUILD)/headers \
		$(BUILD)/initramfs* $(BUILD)/vm-* $(BUILD)/stage $(BUILD)/patch-out

distclean:
	rm -rf $(BUILD)
