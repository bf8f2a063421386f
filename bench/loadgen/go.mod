module rewind/bench/loadgen

go 1.22
