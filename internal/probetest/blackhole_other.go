//go:build !linux

package probetest

import (
	"errors"
	"net/netip"
)

// Blackhole needs Linux, whose accept queue of a listener that never
// accepts drops SYNs once full; elsewhere it says so.
func Blackhole(netip.Addr) (port uint16, release func(), err error) {
	return 0, nil, errors.New("a blackholed listener needs Linux")
}
