package service_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/probetest"
)

// pattern is seed's bytes: no two seeds' alike, nor two stretches of one.
func pattern(seed uint64, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}).Read(b)
	return b
}

// TestFetchLentBuffers checks that each Fetch receives its own target's
// bytes, in order, while the server hands gRPC's transport the buffers it
// read them into (wire.OutChunk): the caller's flow-control window is
// gRPC's least, so the transport holds each chunk long after the handler
// has read the next. A buffer back in the pool before the transport wrote
// it would carry the next chunk's bytes, or another Fetch's, in its place.
// Several Fetches run at once, TCP and UDP, one cut by max_bytes in the
// middle of a buffer.
func TestFetchLentBuffers(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t, probetest.Unlimited)
	conn, err := grpc.NewClient(e.Addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := netprobev1.NewProbeServiceClient(conn)

	const size = 4 << 20
	for i := range 4 {
		sent := pattern(uint64(i), size)
		want := sent
		req := &netprobev1.FetchRequest{}
		if i == 3 {
			// The cap falls inside a chunk, whose buffer goes out cut.
			req.MaxBytes = size - 1000
			want = sent[:req.MaxBytes]
		}
		t.Run(fmt.Sprintf("tcp %d", i), func(t *testing.T) {
			t.Parallel()
			tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
				c.Write(sent)
				c.Close()
			})
			req.Target = tcpTarget(tg.Port())
			f := fetch(t, client, req)
			checkError(t, f.summary.Error, nil)
			if got := f.bytes(); !bytes.Equal(got, want) {
				at := 0
				for at < min(len(got), len(want)) && got[at] == want[at] {
					at++
				}
				t.Fatalf("received %d bytes, want %d: they differ from byte %d on", len(got), len(want), at)
			}
		})
	}
	t.Run("udp", func(t *testing.T) {
		t.Parallel()
		// Each datagram of the reply is 4 KiB of its own pattern.
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		var want [][]byte
		for i := range 8 {
			want = append(want, pattern(uint64(100+i), 4<<10))
		}
		go func() {
			buf := make([]byte, 64)
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			for _, d := range want {
				pc.WriteTo(d, from)
			}
		}()
		f := fetch(t, client, &netprobev1.FetchRequest{
			Target:      &netprobev1.Target{Host: "127.0.0.1", Port: uint32(pc.LocalAddr().(*net.UDPAddr).Port), Network: netprobev1.Network_NETWORK_UDP},
			Request:     &netprobev1.FetchRequest_Payload{Payload: []byte("go")},
			Framing:     netprobev1.Framing_FRAMING_DATAGRAMS,
			ReadTimeout: durationpb.New(probetest.Timeout / 4),
		})
		checkError(t, f.summary.Error, nil)
		// Loopback drops no datagram unless the socket's buffer is full,
		// which 32 KiB (about 64 KiB of the kernel's accounting) is not.
		if len(f.data) != len(want) {
			t.Fatalf("%d datagrams, want %d", len(f.data), len(want))
		}
		for i := range want {
			if !bytes.Equal(f.data[i], want[i]) {
				t.Errorf("datagram %d is not the one sent", i)
			}
		}
	})
}
