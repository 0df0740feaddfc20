module github.com/l2tpu/l2tpu

go 1.26.8

require (
	github.com/google/gopacket v1.1.19
	github.com/songgao/water v0.0.0-20200317203138-2b4b6d7c09d8
	golang.org/x/sys v0.49.0
)

require golang.org/x/net v0.62.0
