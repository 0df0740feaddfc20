package dataplane

import (
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/l2tpu/l2tpu/conn"
	"github.com/l2tpu/l2tpu/encap"
	"github.com/l2tpu/l2tpu/tap"
)

// fakeConn is a tunnel socket that only counts what it is given.
type fakeConn struct{ msgs, bytes int }

func (f *fakeConn) WaitRead() error                             { return nil }
func (f *fakeConn) PollFD() int                                 { return -1 }
func (f *fakeConn) ICMPErrors() uint64                          { return 0 }
func (f *fakeConn) File() (*os.File, error)                     { return nil, os.ErrInvalid }
func (f *fakeConn) ReadBatch([][]byte, []int, int) (int, error) { return 0, nil }
func (f *fakeConn) PathMTU() int                                { return 1500 }
func (f *fakeConn) Close() error                                { return nil }
func (f *fakeConn) WriteBatch(bufs [][]byte, off int) (int, error) {
	for _, b := range bufs {
		f.bytes += len(b) - off
	}
	f.msgs += len(bufs)
	return len(bufs), nil
}

var (
	_ conn.Conn  = (*fakeConn)(nil)
	_ tap.Device = (*fakeDev)(nil)
)

// fakeDev is a TAP that counts what it is given (and, with record, keeps a
// copy of each frame).
type fakeDev struct {
	frames int
	record bool
	got    [][]byte
}

func (f *fakeDev) Name() string                           { return "fake0" }
func (f *fakeDev) WaitRead() error                        { return nil }
func (f *fakeDev) PollFD() int                            { return -1 }
func (f *fakeDev) Read([][]byte, []int, int) (int, error) { return 0, nil }
func (f *fakeDev) Write(bufs [][]byte, off int) (int, error) {
	f.frames += len(bufs)
	if f.record {
		for _, b := range bufs {
			f.got = append(f.got, append([]byte(nil), b[off:]...))
		}
	}
	return len(bufs), nil
}
func (f *fakeDev) Close() error  { return nil }
func (f *fakeDev) Remove() error { return nil }

func (f *fakeDev) SetPersist(bool) error { return nil }
func (f *fakeDev) SetCarrier(bool) error { return nil }

// benchSession wires one session of cfg to fakes, without any I/O.
func benchSession(tb testing.TB, e encap.Encap, cfg SessionConfig) (*Manager, *tunnel, *session, *fakeConn, *fakeDev) {
	m := &Manager{log: slog.New(slog.DiscardHandler), epoch: time.Now(), tunnels: map[uint32]*tunnel{}}
	m.batches.New = func() any { return newBatch() }
	m.helds.New = func() any { return &held{buf: make([]byte, 2048)} }
	fc, fd := &fakeConn{}, &fakeDev{}
	t := &tunnel{cfg: TunnelConfig{TunnelID: 1, Encap: e}, conn: fc}
	wire := cfg.wire(e)
	s := &session{m: m, cfg: cfg, t: t, dev: fd, queues: []tap.Device{fd}, tx: encap.NewTxHeader(&wire), rx: encap.NewRxHeader(&wire),
		hasL2S: cfg.L2Spec == encap.L2SpecDefault,
		seq:    encap.NewSeq[*held](encap.SeqConfig{SendSeq: cfg.SendSeq, RecvSeq: cfg.RecvSeq, ReorderTimeout: cfg.ReorderTimeout})}
	s.setMTU(1446)
	t.sessions.set(cfg.SessionID, s)
	return m, t, s, fc, fd
}

func benchCfg(seq bool) SessionConfig {
	c := encap.MustParseCookie("0102030405060708")
	return SessionConfig{TunnelID: 1, SessionID: 7, PeerSessionID: 7, Cookie: c, PeerCookie: c,
		L2Spec: encap.L2SpecDefault, SendSeq: seq, RecvSeq: seq}
}

// BenchmarkTransmit: one op is one frame of a full batch encapsulated in
// place and handed to the socket layer.
func BenchmarkTransmit(b *testing.B) {
	for _, seq := range []bool{false, true} {
		name := "seq-none"
		if seq {
			name = "seq-both"
		}
		b.Run(name, func(b *testing.B) {
			m, _, s, fc, _ := benchSession(b, encap.EncapUDP, benchCfg(seq))
			bt := m.getBatch()
			for i := range bt.sizes {
				bt.sizes[i] = 1400
			}
			b.SetBytes(1400)
			b.ReportAllocs()
			for i := 0; i < b.N; i += batchSize {
				s.transmit(bt, batchSize)
			}
			if fc.msgs < b.N {
				b.Fatal(fc.msgs)
			}
		})
	}
}

// BenchmarkReceive: one op is one message of a full batch classified,
// sequence-checked, counted and handed to the TAP.
func BenchmarkReceive(b *testing.B) {
	for _, seq := range []bool{false, true} {
		name := "seq-none"
		if seq {
			name = "seq-both"
		}
		b.Run(name, func(b *testing.B) {
			cfg := benchCfg(seq)
			m, t, _, _, fd := benchSession(b, encap.EncapUDP, cfg)
			wire := cfg.wire(encap.EncapUDP)
			peer := encap.Session{Encap: wire.Encap, SessionID: wire.PeerSessionID, PeerSessionID: wire.SessionID,
				Cookie: wire.PeerCookie, PeerCookie: wire.Cookie, L2Spec: wire.L2Spec}
			tx := encap.NewTxHeader(&peer)
			bt := m.getBatch()
			tn := newTurn()
			ns := uint32(0)
			fill := func() {
				for i := range bt.bufs {
					frame := bt.bufs[i][headroom+tx.Len():]
					frame[12], frame[13] = 0x08, 0x00
					tx.Put(bt.bufs[i][headroom:], encap.SublayerWord(seq, ns))
					ns++
					bt.sizes[i] = tx.Len() + 1400
				}
			}
			b.SetBytes(1400)
			b.ReportAllocs()
			for i := 0; i < b.N; i += batchSize {
				if seq {
					b.StopTimer()
					fill()
					b.StartTimer()
				} else if i == 0 {
					fill()
				}
				m.receive(tn, encap.EncapUDP, t, bt, batchSize)
			}
			if fd.frames < b.N {
				b.Fatal(fd.frames)
			}
		})
	}
}
