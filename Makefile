# Tessera's two commands (see README.md):
#   make demo   install what is missing, build, run a simulated 100-client Fashion-MNIST federation
#   make test   install what is missing, build, run the whole test suite
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: demo test setup configure build bench clean

setup:
	bash scripts/setup.sh

configure: setup
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	$(BUILD)/cli/tessera simulate --clients 100 --fraction 0.1 --rounds 10 --model mlp \
	  --partition iid --local-epochs 5 --batch-size 10 --lr 0.05 --seed 1 --output out/demo

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 900

bench: build
	$(BUILD)/benchmarks/aggregation_benchmark

clean:
	rm -rf $(BUILD)
