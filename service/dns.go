package service

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// DNS: the forward lookups every probe of a name makes, the reverse
// lookups a request may ask for, and the resolver that makes them.

// resolve returns the addresses to try, in the resolver's preference order
// (RFC 6724 for Go's resolver).
func (s *Server) resolve(ctx context.Context, t target) ([]netip.Addr, error) {
	if t.literal.IsValid() {
		return []netip.Addr{t.literal}, nil
	}
	network := "ip"
	switch t.family {
	case netprobev1.IpFamily_IP_FAMILY_IPV4:
		network = "ip4"
	case netprobev1.IpFamily_IP_FAMILY_IPV6:
		network = "ip6"
	}
	addrs, err := s.cfg.Resolver.LookupNetIP(ctx, network, t.host)
	var addrErr *net.AddrError
	switch {
	case errors.As(err, &addrErr):
		// The name has addresses, none of the family asked for: Go says
		// so with an AddrError when they come from the hosts file.
		return nil, noAddress(t.host, network)
	case err != nil:
		// A *net.DNSError already names the lookup and the host.
		return nil, s.dnsError(err)
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if a = a.Unmap(); !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, noAddress(t.host, network)
	}
	return preferred(out, t.family), nil
}

// preferred keeps the addresses of the family a PREFER family asks for,
// when there are any.
func preferred(addrs []netip.Addr, family netprobev1.IpFamily) []netip.Addr {
	if family != netprobev1.IpFamily_IP_FAMILY_PREFER_IPV4 && family != netprobev1.IpFamily_IP_FAMILY_PREFER_IPV6 {
		return addrs
	}
	want4 := family == netprobev1.IpFamily_IP_FAMILY_PREFER_IPV4
	kept := slices.DeleteFunc(slices.Clone(addrs), func(a netip.Addr) bool { return a.Is4() != want4 })
	if len(kept) == 0 {
		return addrs
	}
	return kept
}

// noAddress is the error of a name with no address of the family asked
// for: NO_SUCH_HOST, as for a name that does not exist.
func noAddress(host, network string) error {
	family := map[string]string{"ip4": "IPv4 ", "ip6": "IPv6 "}[network]
	return &net.DNSError{Err: "no " + family + "address", Name: host, IsNotFound: true}
}

// dnsError returns err with the DNS server it names set to the one
// queried: Go's resolver names /etc/resolv.conf's, even when its Dial
// sends the query elsewhere.
func (s *Server) dnsError(err error) error {
	var dnsErr *net.DNSError
	if s.cfg.DNSServer == "" || !errors.As(err, &dnsErr) || dnsErr.Server == "" {
		return err
	}
	fixed := *dnsErr
	fixed.Server = s.cfg.DNSServer
	return &fixed
}

// ResolverFor returns Go's resolver, sending every DNS query to the server
// at addr ("host:port") or, when addr is empty, to the servers in
// /etc/resolv.conf. The hosts file is read first, as getaddrinfo does.
//
// Its connections to DNS servers are closed as soon as the lookup is
// abandoned: the standard resolver would otherwise keep waiting for an
// answer for its full per-query timeout after the probe gave up.
func ResolverFor(addr string) *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, server string) (net.Conn, error) {
			if addr != "" {
				server = addr
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, server)
			if err != nil {
				return nil, err
			}
			stop := context.AfterFunc(ctx, func() { c.Close() })
			// The resolver tells datagram from stream connections by
			// type, so the wrapper must keep the concrete type's methods.
			switch c := c.(type) {
			case *net.UDPConn:
				return &udpConn{c, stop}, nil
			case *net.TCPConn:
				return &tcpConn{c, stop}, nil
			}
			stop()
			return c, nil
		},
	}
}

type udpConn struct {
	*net.UDPConn
	stop func() bool
}

func (c *udpConn) Close() error {
	c.stop()
	return c.UDPConn.Close()
}

type tcpConn struct {
	*net.TCPConn
	stop func() bool
}

func (c *tcpConn) Close() error {
	c.stop()
	return c.TCPConn.Close()
}

// reverseLookup looks addr's IP up by address, like gethostbyaddr.
func (s *Server) reverseLookup(ctx context.Context, addr net.Addr, start time.Time) *netprobev1.ReverseLookup {
	ip := addr.String()
	if h, _, err := net.SplitHostPort(ip); err == nil {
		ip = h
	}
	begin := time.Now()
	names, err := s.cfg.Resolver.LookupAddr(ctx, ip)
	out := &netprobev1.ReverseLookup{Names: names, Duration: durationpb.New(time.Since(begin))}
	if err != nil {
		out.Error = probeError(netprobev1.Stage_STAGE_REVERSE_LOOKUP, ip, s.dnsError(err), time.Since(start))
	}
	return out
}
