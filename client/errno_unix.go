//go:build unix

package client

import (
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// errnos maps errno names to this system's values. The server sends names,
// not numbers, because the numbers differ between systems.
var errnos = sync.OnceValue(func() map[string]syscall.Errno {
	m := make(map[string]syscall.Errno)
	// Errno values are small; 4096 covers every Unix.
	for e := syscall.Errno(1); e < 4096; e++ {
		if name := unix.ErrnoName(e); name != "" {
			m[name] = e
		}
	}
	return m
})
