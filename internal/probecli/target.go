package probecli

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/spf13/cobra"
)

// targetFlags are the flags that say how to reach a target.
type targetFlags struct {
	ipv4, ipv6, udp bool
}

func (t *targetFlags) register(cmd *cobra.Command) {
	t.registerFamily(cmd)
	cmd.Flags().BoolVar(&t.udp, "udp", false, "use UDP instead of TCP")
}

// registerFamily registers -4 and -6 alone, for a command that is TCP's
// only.
func (t *targetFlags) registerFamily(cmd *cobra.Command) {
	f := cmd.Flags()
	f.BoolVarP(&t.ipv4, "ipv4", "4", false, "use IPv4 addresses only")
	f.BoolVarP(&t.ipv6, "ipv6", "6", false, "use IPv6 addresses only")
	cmd.MarkFlagsMutuallyExclusive("ipv4", "ipv6")
}

// network is the client's network name: tcp, tcp4, udp6, ...
func (t *targetFlags) network() string {
	n := "tcp"
	if t.udp {
		n = "udp"
	}
	switch {
	case t.ipv4:
		n += "4"
	case t.ipv6:
		n += "6"
	}
	return n
}

// splitTarget reads a target from the front of args in any of the forms
// people type: HOST PORT, HOST:PORT, [IPV6]:PORT or [IPV6] PORT, PORT a
// number or a service name. It returns the host (without brackets), the
// port and the arguments after them.
func splitTarget(args []string) (host, port string, rest []string, err error) {
	if len(args) == 0 {
		return "", "", nil, usagef("a target is required: HOST PORT or HOST:PORT")
	}
	// HOST:PORT in one argument, but not a bare IPv6 address, whose
	// colons SplitHostPort refuses.
	if h, p, err := net.SplitHostPort(args[0]); err == nil {
		if p == "" {
			return "", "", nil, usagef("target %q: PORT is empty: give a port number or a service name", args[0])
		}
		return h, p, args[1:], nil
	}
	// An IPv6 address with its port after a colon, unbracketed, reads as
	// an address of its own: with no PORT after it, or a PATH where PORT
	// would be, say how to write it.
	if b, ok := bracketed(args[0]); ok && (len(args) < 2 || strings.HasPrefix(args[1], "/")) {
		return "", "", nil, usagef("target %q has no port: an IPv6 address and a port are written %s", args[0], b)
	}
	if len(args) < 2 {
		return "", "", nil, usagef("target %q has no port: give HOST PORT, or HOST:PORT ([IPv6]:PORT)", args[0])
	}
	return strings.TrimSuffix(strings.TrimPrefix(args[0], "["), "]"), args[1], args[2:], nil
}

// bracketed reads s as an IPv6 address followed by a colon and a port
// ("::1:8000", "2001:db8::1:https"), and returns it as [IPV6]:PORT. The
// last part is taken for a port when it is a port number, or when s as a
// whole is no address (a service name cannot end one).
func bracketed(s string) (string, bool) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", false
	}
	host, port := s[:i], s[i+1:]
	if addr, err := netip.ParseAddr(host); err != nil || !addr.Is6() || port == "" {
		return "", false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	_, whole := netip.ParseAddr(s)
	if (err != nil || n == 0) && whole == nil {
		return "", false
	}
	return net.JoinHostPort(host, port), true
}

// targetArgs reads a command's target from args, as splitTarget does,
// with at most extra arguments after it (want says them all, for the
// usage error), and joins it as address does.
func targetArgs(args []string, extra int, want string) (host, addr string, rest []string, err error) {
	host, port, rest, err := splitTarget(args)
	if err != nil {
		return "", "", nil, err
	}
	if len(rest) > extra {
		return "", "", nil, usagef("want %s, got %d argument(s)", want, len(args))
	}
	addr, err = address(host, port)
	return host, addr, rest, err
}

// address joins HOST and PORT|SERVICE, refusing a port number out of range
// here; a service name is the server's to look up.
func address(host, port string) (string, error) {
	if host == "" {
		return "", usagef("HOST is empty")
	}
	if err := checkUTF8("HOST", host); err != nil {
		return "", err
	}
	if err := checkUTF8("SERVICE", port); err != nil {
		return "", err
	}
	if n, err := strconv.ParseUint(port, 10, 64); err == nil && (n == 0 || n > 65535) {
		return "", usagef("PORT %s is out of range 1-65535", port)
	}
	if port == "" {
		return "", usagef("PORT is empty: give a port number or a service name")
	}
	return net.JoinHostPort(host, port), nil
}

// positional accepts min to max arguments, and names them when the count
// is wrong.
func positional(min, max int, names string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) < min || len(args) > max {
			return fmt.Errorf("want %s, got %d argument(s)", names, len(args))
		}
		return nil
	}
}

// checkUTF8 refuses text the request's string fields cannot carry (a
// name typed in a Latin-1 terminal, say), which would otherwise fail as
// the request is encoded, as an internal error.
func checkUTF8(what, s string) error {
	if !utf8.ValidString(s) {
		return usagef("%s %q is not UTF-8", what, s)
	}
	return nil
}
