package probecli

import (
	"strings"
	"testing"

	"github.com/netprobe/netprobe/internal/probetest"
)

// TestPingFlags plays a user, or a script, that asks probe ping for
// echoes beyond what ping or the API allows: each is a usage error naming
// the flag, found before anything is sent. The --server is a listener
// that counts connections: not even its health check may reach it.
func TestPingFlags(t *testing.T) {
	t.Parallel()
	server := probetest.Listen(t, "127.0.0.1:0", nil)
	for _, tc := range []struct {
		name string
		args []string
		want string // stderr's first line
	}{
		{"no echoes", []string{"ping", "-c", "0", "127.0.0.1"}, "--count 0: want 1 or more (leave it out to send until interrupted)"},
		{"negative count", []string{"ping", "-c", "-1", "127.0.0.1"}, "--count -1: want 1 or more (leave it out to send until interrupted)"},
		{"negative interval", []string{"ping", "-i", "-1s", "127.0.0.1"}, "--interval -1s: want 10ms or more"},
		{"zero interval: a flood", []string{"ping", "-i", "0s", "127.0.0.1"}, "--interval 0s: want 10ms or more"},
		{"interval under the floor", []string{"ping", "-i", "9ms", "127.0.0.1"}, "--interval 9ms: want 10ms or more"},
		{"interval without a unit", []string{"ping", "-i", "1", "127.0.0.1"}, `invalid argument "1" for "-i, --interval" flag: ...`},
		{"no payload", []string{"ping", "--size", "0", "127.0.0.1"}, "--size 0: want 1 to 8972 bytes"},
		{"payload over the cap", []string{"ping", "--size", "8973", "127.0.0.1"}, "--size 8973: want 1 to 8972 bytes"},
		// 2^32+56 would be 56 as the request's uint32.
		{"payload past uint32", []string{"ping", "--size", "4294967352", "127.0.0.1"}, "--size 4294967352: want 1 to 8972 bytes"},
		{"TTL 0", []string{"ping", "-t", "0", "127.0.0.1"}, "--ttl 0: want 1 to 255"},
		{"TTL 256", []string{"ping", "-t", "256", "127.0.0.1"}, "--ttl 256: want 1 to 255"},
		{"TTL past uint32", []string{"ping", "-t", "4294967297", "127.0.0.1"}, "--ttl 4294967297: want 1 to 255"},
		{"source not an address", []string{"ping", "--source", "eth0", "127.0.0.1"}, `--source "eth0": want an IP address`},
		{"both families", []string{"ping", "-4", "-6", "127.0.0.1"}, "if any flags in the group [ipv4 ipv6] are set none of the others can be; [ipv4 ipv6] were all set"},
		{"no host", []string{"ping"}, "..."},
		{"two hosts", []string{"ping", "127.0.0.1", "127.0.0.2"}, "..."},
	} {
		for _, mode := range []struct {
			name  string
			flags []string
		}{{"in-process", nil}, {"server", []string{"--server", server.Addr()}}} {
			t.Run(tc.name+"/"+mode.name, func(t *testing.T) {
				r := probe(probetest.Context(t), nil, append(tc.args, mode.flags...)...)
				first, _, _ := strings.Cut(r.stderr, "\n")
				if r.code != exitUsage || !lineMatches(first, "probe: "+tc.want) || !strings.Contains(r.stderr, "--help") || r.stdout != "" {
					t.Errorf("exit %d, stdout %q, stderr\n%s\nwant exit %d, %q and a pointer to --help", r.code, r.stdout, r.stderr, exitUsage, "probe: "+tc.want)
				}
			})
		}
	}
	if !server.AcceptedNothing() {
		t.Error("the --server was reached for a command line that is refused")
	}
}
