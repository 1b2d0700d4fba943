# make deb builds dist/edgegate_<version>_<arch>.deb reproducibly.
# VERSION comes from the latest v* git tag, or is given: make deb VERSION=1.2.3
VERSION ?= $(shell git describe --tags --match 'v[0-9]*' --abbrev=0 2>/dev/null | sed 's/^v//')
ifeq ($(VERSION),)
VERSION := 0.1.0
endif
ARCH ?= $(shell go env GOARCH)
COMMIT ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 1795478400)
export SOURCE_DATE_EPOCH

# staticcheck runs at this version without being a module requirement.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: build deb test check clean

build:
	CGO_ENABLED=0 GOARCH=$(ARCH) go build -trimpath -buildvcs=false \
		-ldflags "-s -w -buildid= -X main.version=$(VERSION) -X main.commit=$(COMMIT)" -o dist/edgegate ./cmd/edgegate

deb: build
	cd packaging && go run . -binary ../dist/edgegate -version $(VERSION) -arch $(ARCH) -out ../dist

test:
	go test -race -timeout 30m ./...

# check is what to run before a commit: formatting, vet, staticcheck and
# the tests without the multi-process ones.
check:
	@files="$$(gofmt -l .)"; if [ -n "$$files" ]; then echo "gofmt -l: not formatted:"; echo "$$files"; exit 1; fi
	go vet ./...
	go run $(STATICCHECK) ./...
	go test -short -race ./...

clean:
	rm -rf dist
