# smsmilter: the targets a developer and CI use.
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: build test bench fuzz package clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o bin/smsmilter ./cmd/smsmilter

# The whole test suite, as CI runs it.
test:
	$(GO) test -race -count=1 -timeout 30m ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# dist/smsmilter_<ver>_amd64.deb and dist/smsmilter-<ver>.x86_64.rpm: a static,
# reproducible build packaged with nfpm (packaging/build.sh; VERSION=... to
# override the version from git describe).
package:
	VERSION="$(VERSION)" GO="$(GO)" packaging/build.sh

clean:
	rm -rf bin dist
