package client_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log"
	"syscall"
	"time"

	"github.com/netprobe/netprobe/client"
)

func Example() {
	c, err := client.Dial(probeServer)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	res, err := c.Connect(ctx, "tcp", webServer, client.ConnectOptions{Timeout: 2 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("connected to", res.RemoteAddr.Addr(), "after", len(res.Attempts), "attempt")
	// Output: connected to 127.0.0.1 after 1 attempt
}

func ExampleClient_Connect() {
	c, err := client.Dial(probeServer)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	_, err = c.Connect(ctx, "tcp", closedAddr, client.ConnectOptions{})
	var pe *client.ProbeError
	switch {
	case errors.As(err, &pe) && pe.Stage == client.StageConnect && pe.Reason == client.ReasonRefused:
		fmt.Println("refused; an ECONNREFUSED:", errors.Is(err, syscall.ECONNREFUSED))
	case errors.As(err, &pe):
		fmt.Println("the probe failed:", pe.Stage, pe.Reason)
	case err != nil:
		fmt.Println("the probe server failed the call:", err)
	default:
		fmt.Println("connected")
	}
	// Output: refused; an ECONNREFUSED: true
}

func ExampleClient_Fetch() {
	c, err := client.Dial(probeServer)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	f, err := c.Fetch(ctx, "tcp", webServer, client.FetchOptions{HTTPGet: &client.HTTPGet{Path: "/"}})
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	lines := bufio.NewScanner(f)
	for lines.Scan() {
		if lines.Text() == "" {
			break // the end of the headers
		}
	}
	lines.Scan()
	fmt.Println("body:", lines.Text())
	// Scanner.Err is nil at io.EOF; a failed exchange is a *ProbeError.
	if err := lines.Err(); err != nil {
		log.Fatal(err)
	}
	// Output: body: hello
}

func ExampleClient_ResolveService() {
	c, err := client.Dial(probeServer)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	svc, err := c.ResolveService(ctx, "tcp", "https")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s is %d/%s\n", svc.Name, svc.Port, svc.Protocol)
	// Output: https is 443/tcp
}

func ExampleClient_Health() {
	c, err := client.Dial(probeServer)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	status, err := c.Health(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(status)
	// Output: SERVING
}

func ExampleClient_ResolvePort() {
	c, err := client.Dial(probeServer)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	svc, err := c.ResolvePort(ctx, "udp", 53)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(svc.Name)
	// Output: domain
}

func ExampleClient_Sweep() {
	c, err := client.Dial(probeServer)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	targets := []client.SweepTarget{
		{Network: "tcp", Address: webServer},
		{Network: "tcp", Address: closedAddr},
	}
	outcome := make([]string, len(targets))
	for r, err := range c.Sweep(ctx, targets, client.SweepOptions{Concurrency: 2}) {
		if err != nil {
			log.Fatal(err)
		}
		outcome[r.Index] = "ok"
		if r.Err != nil {
			outcome[r.Index] = r.Err.Reason.String()
		}
	}
	fmt.Println(outcome)
	// Output: [ok REASON_REFUSED]
}
