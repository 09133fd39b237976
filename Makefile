# edged — build, test and benchmark.
#
#   make demo    build, start edged on its embedded defaults, run the main job
#   make test    install what the tests need (apt), lint, check generated
#                code, build (also for arm64 and armv7) and run every test
#   make bench   print the budget table
#
# Needs Go (1.26, /usr/local/go) and root on Debian 12.

SHELL      := /bin/bash
GO         ?= $(shell command -v go || echo /usr/local/go/bin/go)
export PATH := $(dir $(GO)):$(PATH)
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION   ?= $(shell git rev-parse --verify -q HEAD 2>/dev/null || echo unknown)
LDFLAGS    := -s -w -X github.com/edged/edged/internal/buildinfo.Version=$(VERSION) -X github.com/edged/edged/internal/buildinfo.Revision=$(REVISION)
# nethttpomithttp2: the registry client speaks HTTP/1.1 only (HTTP/2's
# per-stream windows cost megabytes of buffers on parallel layer
# downloads), so the HTTP/2 code is left out of the binaries.
GOTAGS     := nethttpomithttp2
GOBUILD    := CGO_ENABLED=0 $(GO) build -trimpath -tags $(GOTAGS) -ldflags "$(LDFLAGS)"
COMMANDS   := edged edgectl edged-shim edged-remote
# Debian packages the tests and benchmarks use.
APT_PACKAGES := runc protobuf-compiler systemd busybox-static containerd skopeo docker-registry \
	qemu-system-x86 qemu-user linux-image-amd64 cpio kmod xz-utils containernetworking-plugins iptables iproute2 \
	util-linux procps apache2-utils
# What `make demo` needs at run time.
DEMO_PACKAGES := runc busybox-static
GOTEST_FLAGS ?= -timeout 25m

.PHONY: all build cross deps install-packages proto proto-check lint test test-go test-arm test-vm bench demo clean

all: build

build:
	@mkdir -p bin
	$(GOBUILD) -o bin/ $(addprefix ./cmd/,$(filter $(COMMANDS),$(notdir $(wildcard cmd/*))))

cross:
	GOOS=linux GOARCH=arm64 $(GOBUILD) -o bin/linux-arm64/ $(addprefix ./cmd/,$(filter $(COMMANDS),$(notdir $(wildcard cmd/*))))
	GOOS=linux GOARCH=arm GOARM=7 $(GOBUILD) -o bin/linux-armv7/ $(addprefix ./cmd/,$(filter $(COMMANDS),$(notdir $(wildcard cmd/*))))

# deps installs the Debian packages that are missing (apt-get update first).
deps:
	@$(MAKE) --no-print-directory install-packages PACKAGES="$(APT_PACKAGES)"

install-packages:
	@missing=$$(for p in $(PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

proto:
	./hack/protogen.sh

# proto-check fails when the committed generated code is stale.
proto-check: deps
	./hack/protogen.sh
	@if [ -n "$$(git status --porcelain -- proto)" ]; then \
		echo "generated protobuf code is stale: run 'make proto' and commit"; git status --porcelain -- proto; exit 1; fi

# lint also vets everything for 32-bit ARM (armv7 devices: the tests too
# must build there), and the client package for macOS: it is for fleet
# agents and tools, which may be built on another system.
lint:
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi
	$(GO) vet ./...
	GOARCH=arm GOARM=7 $(GO) vet ./...
	GOOS=darwin $(GO) vet ./edged/client

test: deps lint proto-check build cross test-go test-arm test-vm

test-go: build
	$(GO) test $(GOTEST_FLAGS) ./...

# test-arm runs the tests of the packages with architecture-specific code
# for armv7 and arm64 under QEMU's user-mode emulation: the metadata
# package's raw pwrite(2) passes its 64-bit offset differently on 32-bit
# ARM (a register pair after a padding argument), and a wrong offset would
# write the WAL's frames in the wrong place, which the WAL tests' copies of
# the files after every commit catch. TestCrashDuringWrites is skipped: it
# runs its own binary as a child process, which needs binfmt_misc.
ARM_TEST_PKGS ?= ./edged/metadata ./proto/rpc
ARM_TEST_DIR  ?= /tmp/edged-armtest
test-arm: deps
	rm -rf $(ARM_TEST_DIR) && mkdir -p $(ARM_TEST_DIR)/arm $(ARM_TEST_DIR)/arm64
	GOARCH=arm GOARM=7 CGO_ENABLED=0 $(GO) test -c -o $(ARM_TEST_DIR)/arm/ $(ARM_TEST_PKGS)
	GOARCH=arm64 CGO_ENABLED=0 $(GO) test -c -o $(ARM_TEST_DIR)/arm64/ $(ARM_TEST_PKGS)
	cd $(ARM_TEST_DIR) && rc=0; \
		for t in arm/*.test; do echo "qemu-arm $$t"; qemu-arm $$t -test.timeout 10m -test.skip '^TestCrashDuringWrites$$' >$$t.log 2>&1 || { cat $$t.log; rc=1; }; done; \
		for t in arm64/*.test; do echo "qemu-aarch64 $$t"; qemu-aarch64 $$t -test.timeout 10m -test.skip '^TestCrashDuringWrites$$' >$$t.log 2>&1 || { cat $$t.log; rc=1; }; done; \
		exit $$rc

# test-vm runs the cgroup, OOM and runtime tests on cgroup v2 in a QEMU VM
# (hack/vm), with edged's binaries prebuilt on the host (EDGED_TEST_BIN).
# About 5 minutes under TCG. TestDetachedTaskLifecycle and TestShimGroup are
# left out: their 30 s context and 0.2 s exit race do not fit a TCG guest.
# edged's binaries run from the guest's tmpfs, as from a device's own
# storage: on the 9p share every page edged reads back after an idle
# release (page_out_code) would be a 9p round trip through an emulated
# virtio device, hundreds of milliseconds added to the first event after
# idle (the OOM latency budget measures the OOM path, not that). The test
# binaries run from tmpfs too: once, under a busy host, a run printed
# nothing for 14 minutes after "=== RUN", not even the test binary's own
# timeout panic, as a process stalled on a page fault of its 9p-backed
# code would.
VMTEST_DIR ?= /tmp/edged-vmtest
VMTEST_RUN ?= ^Test(CgroupLimitsMetricsUpdate|OOM50|RunForegroundExitCodeAndOutput|RestartRecovery)$$
test-vm: deps build
	rm -rf $(VMTEST_DIR) && mkdir -p $(VMTEST_DIR)/bin
	cp $(addprefix bin/,$(COMMANDS)) $(VMTEST_DIR)/bin/
	CGO_ENABLED=0 $(GO) test -c -o $(VMTEST_DIR)/ ./cgroups/... ./edged/integration
	hack/vm/run.sh --timeout 900 --share $(VMTEST_DIR) -- sh -c 'cd /tmp && rc=0; \
		mkdir -p /tmp/edged-bin /tmp/edged-tests && cp $(VMTEST_DIR)/bin/* /tmp/edged-bin/ && export EDGED_TEST_BIN=/tmp/edged-bin || exit 1; \
		cp $(VMTEST_DIR)/*.test /tmp/edged-tests/ || exit 1; \
		for t in cgroups oom; do /tmp/edged-tests/$$t.test -test.timeout 5m || rc=1; done; \
		/tmp/edged-tests/integration.test -test.v -test.timeout 10m -test.run "$(VMTEST_RUN)" || rc=1; exit $$rc'

bench: deps build
	$(GO) run ./hack/bench

demo: build
	@$(MAKE) --no-print-directory install-packages PACKAGES="$(DEMO_PACKAGES)"
	./hack/demo.sh

clean:
	rm -rf bin
