package service_test

import (
	"context"
	"net"
	"testing"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/probetest"
	"github.com/netprobe/netprobe/internal/services"
	"github.com/netprobe/netprobe/service"
)

// benchTarget is a loopback listener that accepts and closes.
func benchTarget(b *testing.B) *net.TCPAddr {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go probetest.AcceptAndClose(ln)
	return ln.Addr().(*net.TCPAddr)
}

// BenchmarkDial is the baseline: a bare dial and close.
func BenchmarkDial(b *testing.B) {
	addr := benchTarget(b).String()
	b.ReportAllocs()
	// 32 goroutines a CPU: 64 in flight on 2 CPUs, as a busy client has.
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		var d net.Dialer
		for pb.Next() {
			c, err := d.DialContext(context.Background(), "tcp", addr)
			if err != nil {
				b.Error(err)
				return
			}
			c.Close()
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "probes/s")
}

// BenchmarkConnectHandler calls the Connect handler directly: the
// service's own cost per probe, without gRPC.
func BenchmarkConnectHandler(b *testing.B) {
	addr := benchTarget(b)
	tab, err := services.Load("")
	if err != nil {
		b.Fatal(err)
	}
	srv, err := service.New(service.Config{Services: tab})
	if err != nil {
		b.Fatal(err)
	}
	req := &netprobev1.ConnectRequest{Target: &netprobev1.Target{Host: "127.0.0.1", Port: uint32(addr.Port)}}
	b.ReportAllocs()
	// 32 goroutines a CPU: 64 in flight on 2 CPUs, as a busy client has.
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := srv.Connect(context.Background(), req)
			if err != nil || resp.GetError() != nil {
				b.Errorf("Connect: %v, %v", resp.GetError(), err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "probes/s")
}

// BenchmarkConnect runs Connect through a real gRPC connection on loopback.
func BenchmarkConnect(b *testing.B) {
	addr := benchTarget(b)
	e := probetest.Start(b)
	req := &netprobev1.ConnectRequest{Target: &netprobev1.Target{Host: "127.0.0.1", Port: uint32(addr.Port)}}
	b.ReportAllocs()
	// 32 goroutines a CPU: 64 in flight on 2 CPUs, as a busy client has.
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := e.Probe.Connect(context.Background(), req)
			if err != nil || resp.GetError() != nil {
				b.Errorf("Connect: %v, %v", resp.GetError(), err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "probes/s")
}
