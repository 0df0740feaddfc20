package dataplane

import (
	"github.com/l2tpu/l2tpu/conn"
	"github.com/l2tpu/l2tpu/encap"
	"github.com/l2tpu/l2tpu/tap"
)

// Buffer layout: every packet buffer has headroom in front of the frame so
// the L2TP header (transmit) or the IPv4 header of a raw socket (receive)
// lands in place without a copy.
const (
	headroom = 64 // >= IPv4 header (20) + longest L2TP header (20)
	// maxFrame is the longest frame of any MTU a TAP accepts: every
	// buffer takes it whole, so no session MTU is cut short. Only the
	// pages a frame touches become resident.
	maxFrame  = tap.MaxFrame
	bufSize   = headroom + encap.MaxHeaderLen + maxFrame
	batchSize = conn.MaxBatch // one system call's worth
)

// batch is a set of packet buffers taken from the manager's pool for one
// read-process-write round and given back right after: idle sessions and
// tunnels hold none.
type batch struct {
	bufs  [][]byte
	sizes []int
	out   [][]byte
	own   [][]byte // the batch's buffers: a reader may lend its own in bufs
}

func newBatch() *batch {
	b := &batch{bufs: make([][]byte, batchSize), sizes: make([]int, batchSize), out: make([][]byte, batchSize), own: make([][]byte, batchSize)}
	mem := make([]byte, batchSize*bufSize)
	for i := range b.bufs {
		b.own[i] = mem[i*bufSize : (i+1)*bufSize : (i+1)*bufSize]
	}
	copy(b.bufs, b.own)
	return b
}

// restore puts the batch's own buffers back after a read that may have
// lent others (conn.Reader.ReadBatch).
func (b *batch) restore() { copy(b.bufs, b.own) }

// turn is what a loop lends a source for one batch: its buffers (a loop
// serves one source at a time, so they are reused without a pool).
type turn struct {
	rx    *batch // what a socket is read into
	tx    *batch // what a TAP is read into: a session's batch, or the turnaround's
	round uint64 // the loop's round (never 0)
}

func newTurn() *turn { return &turn{rx: newBatch(), tx: newBatch()} }

// held is a received frame waiting in a reorder buffer: a copy, because
// the batch it arrived in is reused at once. Its buffer grows to the
// largest frame it has held.
type held struct {
	buf    []byte
	frame  []byte // buf[:n]
	msgLen int    // L2TP message length, for rx_bytes
}

// hold copies a frame into h.
func (h *held) hold(frame []byte, msgLen int) {
	if cap(h.buf) < len(frame) {
		h.buf = make([]byte, len(frame))
	}
	h.frame, h.msgLen = h.buf[:copy(h.buf[:cap(h.buf)], frame)], msgLen
}
