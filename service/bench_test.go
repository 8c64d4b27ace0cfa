package service_test

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/netprobe/netprobe/client"
	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/probetest"
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
	srv, err := service.New(service.Config{})
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
	e := probetest.Start(b, probetest.Unlimited)
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

// fetchBytes is what each Fetch benchmark operation moves: the server's
// default cap.
var fetchBytes = int64(service.DefaultLimits().MaxFetchBytes)

// benchSource is a loopback listener that sends fetchBytes to each
// connection, then closes it.
func benchSource(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go probetest.SendAndClose(ln, fetchBytes)
	return ln.Addr().String()
}

func reportMiB(b *testing.B) {
	b.ReportMetric(float64(fetchBytes)*float64(b.N)/(1<<20)/b.Elapsed().Seconds(), "MiB/s")
}

// BenchmarkRelay is Fetch's baseline: the same bytes from the same source
// copied through user space to a sink that discards them.
func BenchmarkRelay(b *testing.B) {
	src := benchSource(b)
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sink.Close() })
	go func() {
		for {
			c, err := sink.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(io.Discard, c)
			}()
		}
	}()
	buf := make([]byte, 256<<10)
	b.SetBytes(fetchBytes)
	for b.Loop() {
		in, err := net.Dial("tcp", src)
		if err != nil {
			b.Fatal(err)
		}
		out, err := net.Dial("tcp", sink.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		// Hiding ReaderFrom and WriterTo keeps the copy in user space.
		n, err := io.CopyBuffer(struct{ io.Writer }{out}, struct{ io.Reader }{in}, buf)
		in.Close()
		out.Close()
		if err != nil || n != fetchBytes {
			b.Fatalf("relayed %d bytes of %d: %v", n, fetchBytes, err)
		}
	}
	reportMiB(b)
}

// BenchmarkFetch fetches the same bytes through a real gRPC connection,
// with the client library, to a caller that discards them.
func BenchmarkFetch(b *testing.B) {
	src := benchSource(b)
	e := probetest.Start(b, probetest.Unlimited)
	c, err := client.Dial(e.Addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	b.SetBytes(fetchBytes)
	for b.Loop() {
		f, err := c.Fetch(context.Background(), "tcp", src, client.FetchOptions{})
		if err != nil {
			b.Fatal(err)
		}
		var n int64
		for {
			d, err := f.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			n += int64(len(d))
		}
		f.Close()
		if n != fetchBytes {
			b.Fatalf("fetched %d bytes of %d", n, fetchBytes)
		}
	}
	reportMiB(b)
}
