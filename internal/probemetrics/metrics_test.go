package probemetrics

import (
	"net/netip"
	"testing"
)

// TestIPHash checks probe_ip_addr_hash against the values Debian's
// blackbox_exporter 0.23 gives for the same addresses (scraped by hand;
// cmd/probed's TestSeriesParity compares them live).
func TestIPHash(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want float64
	}{
		{"127.0.0.1", 3668918509},
		{"127.0.0.2", 3618585652},
		{"127.0.0.3", 3635363271},
		{"::1", 1751717746},
	} {
		if got := ipHash(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("ipHash(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}
