package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// naiveProber is the floor issue #26 names for one gRPC call per probe: a
// gRPC server whose Connect dials, closes and says where it connected,
// and nothing else: no limits, policy, validation, audit line, metrics,
// TCP_INFO or attempts. ghz drives it as it drives probed.
type naiveProber struct {
	netprobev1.UnimplementedProbeServiceServer
}

func (naiveProber) Connect(ctx context.Context, req *netprobev1.ConnectRequest) (*netprobev1.ConnectResponse, error) {
	start := time.Now()
	t := req.GetTarget()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(t.GetHost(), strconv.Itoa(int(t.GetPort()))))
	if err != nil {
		return &netprobev1.ConnectResponse{Error: &netprobev1.ProbeError{Message: err.Error()}}, nil
	}
	defer c.Close()
	return &netprobev1.ConnectResponse{
		LocalAddress:    c.LocalAddr().String(),
		PeerAddress:     c.RemoteAddr().String(),
		ConnectDuration: durationpb.New(time.Since(start)),
	}, nil
}

// runNaiveProber is the -naive-prober side of startNaiveProber: it serves
// the naive prober on loopback, prints its address and serves until it
// is interrupted or its standard input closes.
func runNaiveProber(ctx context.Context, _ options, out io.Writer) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s := grpc.NewServer()
	netprobev1.RegisterProbeServiceServer(s, naiveProber{})
	reflection.Register(s)
	go func() {
		// The bench ends this process by closing its input.
		io.Copy(io.Discard, os.Stdin)
		s.Stop()
	}()
	stop := context.AfterFunc(ctx, s.Stop)
	defer stop()
	fmt.Fprintln(out, ln.Addr())
	if err := s.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// naiveServer is a naive prober running in a process of its own.
type naiveServer struct {
	addr string
	pid  int
	// stop ends it and returns the CPU time it spent, user and system;
	// it may be called more than once.
	stop func() (time.Duration, error)
}

// startNaiveProber runs the naive prober in a process of its own, as
// probed runs.
func startNaiveProber(ctx context.Context) (*naiveServer, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, self, "-naive-prober")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop := sync.OnceValues(func() (time.Duration, error) {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			return 0, err
		}
		return cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		stop()
		return nil, fmt.Errorf("naive prober: %w", err)
	}
	return &naiveServer{addr: line[:len(line)-1], pid: cmd.Process.Pid, stop: stop}, nil
}
