package dataplane

import (
	"maps"
	"net/netip"
	"sync/atomic"
)

// atomicMap is a copy-on-write map: readers on the data path load it
// without locks; writers (control operations, serialised by Manager.mu)
// publish a new copy.
type atomicMap[K comparable, V any] struct {
	p atomic.Pointer[map[K]V]
}

func (a *atomicMap[K, V]) init()          { a.p.Store(&map[K]V{}) }
func (a *atomicMap[K, V]) Load() *map[K]V { return a.p.Load() }
func (a *atomicMap[K, V]) get(k K) V      { return (*a.p.Load())[k] }
func (a *atomicMap[K, V]) set(k K, v V)   { a.p.Store(with(*a.p.Load(), k, v)) }
func (a *atomicMap[K, V]) del(k K)        { a.p.Store(without(*a.p.Load(), k)) }

func with[K comparable, V any](m map[K]V, k K, v V) *map[K]V {
	n := maps.Clone(m)
	if n == nil {
		n = map[K]V{}
	}
	n[k] = v
	return &n
}

func without[K comparable, V any](m map[K]V, k K) *map[K]V {
	n := maps.Clone(m)
	delete(n, k)
	return &n
}

func netipAddrPort(a netip.Addr, p uint16) netip.AddrPort { return netip.AddrPortFrom(a, p) }
