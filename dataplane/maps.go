package dataplane

import (
	"iter"
	"maps"
	"sync/atomic"
)

// atomicMap is a copy-on-write map split into shards: readers on the data
// path load a shard without locks; writers (control operations, serialised
// by Manager.mu) publish a new copy of the one shard they change, so a
// change costs the same at 10 and at 10,000 entries (a shard holds n/64).
type atomicMap[K ~uint32 | ~int, V any] struct {
	shards [mapShards]atomic.Pointer[map[K]V]
}

const mapShards = 64

func (a *atomicMap[K, V]) shard(k K) *atomic.Pointer[map[K]V] { return &a.shards[uint(k)%mapShards] }

func (a *atomicMap[K, V]) get(k K) V {
	if m := a.shard(k).Load(); m != nil {
		return (*m)[k]
	}
	var zero V
	return zero
}

func (a *atomicMap[K, V]) set(k K, v V) {
	p := a.shard(k)
	n := map[K]V{}
	if m := p.Load(); m != nil {
		n = maps.Clone(*m)
	}
	n[k] = v
	p.Store(&n)
}

func (a *atomicMap[K, V]) del(k K) {
	p := a.shard(k)
	m := p.Load()
	if m == nil {
		return
	}
	if _, ok := (*m)[k]; !ok {
		return
	}
	n := maps.Clone(*m)
	delete(n, k)
	p.Store(&n)
}

// all iterates over the entries (for control operations: not a snapshot
// of one instant).
func (a *atomicMap[K, V]) all() iter.Seq2[K, V] {
	return func(yield func(K, V) bool) {
		for i := range a.shards {
			m := a.shards[i].Load()
			if m == nil {
				continue
			}
			for k, v := range *m {
				if !yield(k, v) {
					return
				}
			}
		}
	}
}
