// Package interop is l2tpu's interoperability suite (make interop): the
// real Linux kernel's L2TPv3 in a QEMU VM, and QEMU's userspace l2tpv3
// backend, each against the l2tpu binary, for every parameter combination.
// It runs only with L2TPU_INTEROP=1; see interop_test.go.
package interop
