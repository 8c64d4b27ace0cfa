package wire

import (
	"sync"

	"google.golang.org/grpc/mem"
)

// ChunkBytes is the largest chunk of data a Fetch message carries. The
// pool has a class that holds such a message whole.
const ChunkBytes = 256 << 10

// Pool is the buffer pool for netprobe's gRPC servers and clients: the
// transport reads frames into it, the codec marshals into it, and a Fetch
// reads its target's chunks (a class of ChunkBytes and a little more) and
// datagrams (a class of 64 KiB) into it, to hand them to an OutChunk.
//
// It differs from gRPC's default pool in two ways that a Fetch's bulk data
// pays for on every message (bench: about a sixth of probed's CPU, and of
// the client's, went to the default pool): a class just over ChunkBytes,
// where the default pool would hand out (and clear) a 1 MiB buffer, and no
// zeroing, because every user of a buffer writes each byte it then reads:
// the transport reads a frame of exactly the length it asked for, Marshal
// writes exactly the size it measured, and a Fetch sends only what a read
// wrote.
var Pool mem.BufferPool = newPool(256, 4<<10, 16<<10, 32<<10, 64<<10, ChunkBytes+1<<10, 1<<20)

// pool is a set of sync.Pools of buffers, one a size class.
type pool struct {
	classes []class
}

type class struct {
	size int
	pool sync.Pool
}

// newPool returns a pool with these classes, which must be ascending.
func newPool(sizes ...int) *pool {
	p := &pool{classes: make([]class, len(sizes))}
	for i, s := range sizes {
		p.classes[i].size = s
	}
	return p
}

// Get returns a buffer of length n, from the smallest class that holds n;
// larger buffers are allocated and never pooled.
func (p *pool) Get(n int) *[]byte {
	for i := range p.classes {
		c := &p.classes[i]
		if n > c.size {
			continue
		}
		if b, ok := c.pool.Get().(*[]byte); ok {
			*b = (*b)[:n]
			return b
		}
		b := make([]byte, n, c.size)
		return &b
	}
	b := make([]byte, n)
	return &b
}

// Put gives back a buffer that Get returned: one whose capacity is a
// class's size.
func (p *pool) Put(b *[]byte) {
	for i := range p.classes {
		if c := &p.classes[i]; cap(*b) == c.size {
			c.pool.Put(b)
			return
		}
	}
}
