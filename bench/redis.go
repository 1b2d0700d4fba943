package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/edgegate/edgegate/lease"
)

// RedisServer is a redis-server started by the bench: loopback, a free
// port, nothing saved.
type RedisServer struct {
	cmd  *exec.Cmd
	dir  string
	addr string
	exit chan struct{}
}

// StartRedis starts redis-server from PATH and waits until it answers.
func StartRedis(ctx context.Context) (*RedisServer, error) {
	path, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("bench: redis-server not found on PATH (apt-get install redis-server, or give --redis URL)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir, err := os.MkdirTemp("", "edgegate-bench-redis-")
	if err != nil {
		return nil, err
	}
	s := &RedisServer{dir: dir, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), exit: make(chan struct{})}
	s.cmd = exec.Command(path, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--protected-mode", "no", "--loglevel", "warning")
	if err := s.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: start redis-server: %w", err)
	}
	go func() { s.cmd.Wait(); close(s.exit) }()
	c := redis.NewClient(&redis.Options{Addr: s.addr})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := c.Ping(pctx).Err()
		if err == nil {
			// A server that never held a lease: its epoch may count as
			// long begun, or the first grants would wait a lease TTL as
			// after a restart that lost leases.
			err = lease.SetEpochStart(pctx, c, "", time.Now().Add(-time.Hour))
		}
		cancel()
		if err == nil {
			return s, nil
		}
		select {
		case <-s.exit:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("bench: redis-server exited at start")
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.Stop()
			return nil, fmt.Errorf("bench: redis-server does not answer: %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// URL is the redis:// URL of the server.
func (s *RedisServer) URL() string { return "redis://" + s.addr + "/0" }

func (s *RedisServer) Stop() {
	s.cmd.Process.Kill()
	<-s.exit
	os.RemoveAll(s.dir)
}
