package server

import (
	"context"
	"sync/atomic"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// drainingHealth is the standard health service, except that once draining
// has begun a Watch stream ends as soon as it has told its watcher that the
// service is no longer serving. Otherwise every open Watch would hold the
// graceful stop for the whole grace period.
type drainingHealth struct {
	*health.Server
	draining atomic.Bool
}

// drain marks every service NOT_SERVING and lets Watch streams end.
func (h *drainingHealth) drain() {
	h.draining.Store(true)
	h.Shutdown()
}

// Watch implements healthpb.HealthServer.
func (h *drainingHealth) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	return h.Server.Watch(req, &watchStream{Health_WatchServer: stream, ctx: ctx, cancel: cancel, h: h})
}

type watchStream struct {
	healthpb.Health_WatchServer
	ctx    context.Context
	cancel context.CancelFunc
	h      *drainingHealth
}

func (s *watchStream) Context() context.Context { return s.ctx }

func (s *watchStream) Send(r *healthpb.HealthCheckResponse) error {
	err := s.Health_WatchServer.Send(r)
	if s.h.draining.Load() && r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		s.cancel()
	}
	return err
}
