// Package dnstest runs a small authoritative DNS server on loopback for
// tests: names with A, AAAA and PTR records, and names that fail on purpose
// (SERVFAIL, silence, an answer held until the test releases it).
package dnstest

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// Server is a DNS server for tests. Names it has not been told about are
// NXDOMAIN; a name with records of other types only gets an empty answer.
type Server struct {
	// Addr is the server's "ip:port".
	Addr string

	mu    sync.Mutex
	addrs map[string][]netip.Addr
	ptrs  map[string][]string
	srvs  map[string][]SRV
	rcode map[string]int
	drop  map[string]bool
	hold  map[string]*held
}

// held is a reverse lookup whose answer waits for the test.
type held struct {
	queried chan struct{} // closed when the first query arrives
	once    sync.Once
	release <-chan struct{}
}

// Start runs a server on 127.0.0.1 until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("dnstest: listen: %v", err)
	}
	return Serve(t, pc)
}

// Serve runs a server on pc, such as a socket made in a test's network
// namespace, until the test ends; it closes pc then.
func Serve(t testing.TB, pc net.PacketConn) *Server {
	t.Helper()
	s := &Server{
		Addr:  pc.LocalAddr().String(),
		addrs: map[string][]netip.Addr{},
		ptrs:  map[string][]string{},
		srvs:  map[string][]SRV{},
		rcode: map[string]int{},
		drop:  map[string]bool{},
		hold:  map[string]*held{},
	}
	// A Shutdown before the server has started does nothing, and the
	// server would then serve forever: Serve returns once it has started.
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: s, NotifyStartedFunc: func() { close(started) }}
	served := make(chan struct{})
	go func() {
		defer close(served)
		// The error after Shutdown is expected; a failure to serve shows
		// up as the tests' lookups failing.
		_ = srv.ActivateAndServe()
	}()
	select {
	case <-started:
	case <-served:
		t.Fatal("dnstest: the server did not start")
	}
	t.Cleanup(func() {
		_ = srv.Shutdown()
		<-served
	})
	return s
}

// SetAddrs makes name resolve to addrs (A and AAAA records), replacing what
// it resolved to before.
func (s *Server) SetAddrs(name string, addrs ...netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addrs[dns.Fqdn(strings.ToLower(name))] = addrs
}

// SRV is one entry of an SRV record.
type SRV struct {
	Target string
	Port   uint16
}

// SetSRV makes name (such as "_http._tcp.example.test") an SRV record.
func (s *Server) SetSRV(name string, entries ...SRV) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.srvs[dns.Fqdn(strings.ToLower(name))] = entries
}

// SetPTR makes addr look up (by address) to names.
func (s *Server) SetPTR(addr netip.Addr, names ...string) {
	rev, err := dns.ReverseAddr(addr.String())
	if err != nil {
		panic(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range names {
		s.ptrs[rev] = append(s.ptrs[rev], dns.Fqdn(n))
	}
}

// SetRcode makes every query for name fail with rcode, such as
// dns.RcodeServerFailure.
func (s *Server) SetRcode(name string, rcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rcode[dns.Fqdn(strings.ToLower(name))] = rcode
}

// Drop makes the server ignore queries for name, as a lost packet would.
func (s *Server) Drop(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drop[dns.Fqdn(strings.ToLower(name))] = true
}

// HoldPTR delays the answer to the reverse lookup of addr until release is
// closed, so a test can act between a probe's connect and what follows it.
// The returned channel is closed when the query arrives.
func (s *Server) HoldPTR(addr netip.Addr, release <-chan struct{}) (queried <-chan struct{}) {
	rev, err := dns.ReverseAddr(addr.String())
	if err != nil {
		panic(err)
	}
	h := &held{queried: make(chan struct{}), release: release}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold[rev] = h
	return h.queried
}

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeFormatError)
		_ = w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)

	s.mu.Lock()
	drop, h := s.drop[name], s.hold[name]
	s.mu.Unlock()
	if drop {
		return
	}
	if h != nil {
		h.once.Do(func() { close(h.queried) })
		<-h.release
	}

	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	s.mu.Lock()
	defer s.mu.Unlock()
	if rcode, ok := s.rcode[name]; ok {
		m.Rcode = rcode
		_ = w.WriteMsg(m)
		return
	}
	addrs, hasAddrs := s.addrs[name]
	ptrs, hasPTR := s.ptrs[name]
	srvs, hasSRV := s.srvs[name]
	if !hasAddrs && !hasPTR && !hasSRV {
		m.Rcode = dns.RcodeNameError
		_ = w.WriteMsg(m)
		return
	}
	hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 1}
	switch q.Qtype {
	case dns.TypeA, dns.TypeAAAA:
		for _, a := range addrs {
			switch {
			case a.Is4() && q.Qtype == dns.TypeA:
				hdr.Rrtype = dns.TypeA
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
			case a.Is6() && q.Qtype == dns.TypeAAAA:
				hdr.Rrtype = dns.TypeAAAA
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
			}
		}
	case dns.TypePTR:
		hdr.Rrtype = dns.TypePTR
		for _, p := range ptrs {
			m.Answer = append(m.Answer, &dns.PTR{Hdr: hdr, Ptr: p})
		}
	case dns.TypeSRV:
		hdr.Rrtype = dns.TypeSRV
		for _, e := range srvs {
			m.Answer = append(m.Answer, &dns.SRV{Hdr: hdr, Priority: 10, Weight: 10, Port: e.Port, Target: dns.Fqdn(e.Target)})
		}
	}
	_ = w.WriteMsg(m)
}
