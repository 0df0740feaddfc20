package dataplane

import "sync/atomic"

// Stats are the kernel's ten L2TP counters (L2TP_ATTR_STATS), kept per
// tunnel and per session with the kernel's increment points: bytes count
// the L2TP header and the frame (for UDP, from the flags word on).
type Stats struct {
	TxPackets        uint64 `json:"tx_packets"`
	TxBytes          uint64 `json:"tx_bytes"`
	TxErrors         uint64 `json:"tx_errors"`
	RxPackets        uint64 `json:"rx_packets"`
	RxBytes          uint64 `json:"rx_bytes"`
	RxSeqDiscards    uint64 `json:"rx_seq_discards"`
	RxOOSPackets     uint64 `json:"rx_oos_packets"`
	RxErrors         uint64 `json:"rx_errors"`
	RxCookieDiscards uint64 `json:"rx_cookie_discards"`
	RxInvalid        uint64 `json:"rx_invalid"`
}

// Counter is one of the ten counters: its name, as the kernel's
// L2TP_ATTR_ names it and show -s and the JSON print it, and its value in
// a Stats.
type Counter struct {
	Name string
	Get  func(*Stats) uint64
}

// Counters is the one list of the ten counters, in Stats' order (the
// kernel's attribute order): show -s (text and JSON) and the Prometheus
// metrics print them in this order.
var Counters = [...]Counter{
	{"tx_packets", func(s *Stats) uint64 { return s.TxPackets }},
	{"tx_bytes", func(s *Stats) uint64 { return s.TxBytes }},
	{"tx_errors", func(s *Stats) uint64 { return s.TxErrors }},
	{"rx_packets", func(s *Stats) uint64 { return s.RxPackets }},
	{"rx_bytes", func(s *Stats) uint64 { return s.RxBytes }},
	{"rx_seq_discards", func(s *Stats) uint64 { return s.RxSeqDiscards }},
	{"rx_oos_packets", func(s *Stats) uint64 { return s.RxOOSPackets }},
	{"rx_errors", func(s *Stats) uint64 { return s.RxErrors }},
	{"rx_cookie_discards", func(s *Stats) uint64 { return s.RxCookieDiscards }},
	{"rx_invalid", func(s *Stats) uint64 { return s.RxInvalid }},
}

// counters is Stats updated by the data path and read at any time.
type counters struct {
	txPackets, txBytes, txErrors          atomic.Uint64
	rxPackets, rxBytes                    atomic.Uint64
	rxSeqDiscards, rxOOSPackets, rxErrors atomic.Uint64
	rxCookieDiscards, rxInvalid           atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		TxPackets: c.txPackets.Load(), TxBytes: c.txBytes.Load(), TxErrors: c.txErrors.Load(),
		RxPackets: c.rxPackets.Load(), RxBytes: c.rxBytes.Load(),
		RxSeqDiscards: c.rxSeqDiscards.Load(), RxOOSPackets: c.rxOOSPackets.Load(), RxErrors: c.rxErrors.Load(),
		RxCookieDiscards: c.rxCookieDiscards.Load(), RxInvalid: c.rxInvalid.Load(),
	}
}
