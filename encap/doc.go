// Package encap is the L2TPv3 data-message wire format (RFC 3931, RFC 4719)
// as the Linux kernel's net/l2tp speaks it, with no I/O.
//
// The data header is not self-describing: the cookie length and whether the
// default L2-specific sublayer is present come from the session's
// configuration. Receiving is therefore two steps, as in the kernel:
// [PeekUDP] / [PeekIP] find the session ID, the caller looks the session up,
// then the session's [RxHeader] checks version, cookie and sublayer. Every
// outcome is a [Result] a dataplane can count; nothing here allocates or
// panics on any input.
//
// [Seq] is the kernel's per-session sequence-number state (LAC-mode send_seq
// negotiation, recv_seq discards, the 2^23-1 window, resync after more than
// four consecutive out-of-sequence packets), plus a real, wrap-aware,
// bounded reorder buffer used when a reorder timeout is configured.
package encap
