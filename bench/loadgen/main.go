// Command loadgen sends a steady rate of GET requests to a rewind HTTP API until its standard input
// ends, then prints one JSON object: every request's [start (epoch s), seconds, status] and the CPU
// seconds this process used. It is bench/bench_read_load.py's load generator, kept small so that its
// own CPU time takes little from the service it measures. Standard library only.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"
)

type ids struct {
	Accounts []string `json:"accounts"`
	Orders   []string `json:"orders"`
}

func cpuSeconds() float64 {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		return -1
	}
	seconds := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return seconds(usage.Utime) + seconds(usage.Stime)
}

func main() {
	base := flag.String("base", "", "the API's URL, http://127.0.0.1:PORT")
	rate := flag.Float64("rate", 500, "requests per second")
	idsFile := flag.String("ids", "", "a JSON file {\"accounts\": [...], \"orders\": [...]}")
	only := flag.String("only", "", "send only this path")
	workers := flag.Int("workers", 16, "requests in flight at most")
	seed := flag.Int64("seed", 1, "seed of the paths chosen")
	flag.Parse()
	var known ids
	if *only == "" {
		text, err := os.ReadFile(*idsFile)
		if err == nil {
			err = json.Unmarshal(text, &known)
		}
		if err != nil || len(known.Accounts) == 0 || len(known.Orders) == 0 {
			fmt.Fprintln(os.Stderr, "loadgen: -ids must name a file with accounts and orders:", err)
			os.Exit(2)
		}
	}
	rng := rand.New(rand.NewSource(*seed))
	path := func(n int) string {
		if *only != "" {
			return *only
		}
		switch n % 4 {
		case 0:
			return "/state/positions?account=" + known.Accounts[rng.Intn(len(known.Accounts))]
		case 1:
			return "/state/orders/" + known.Orders[rng.Intn(len(known.Orders))]
		case 2:
			return "/lag"
		}
		return "/metrics"
	}
	client := &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns: *workers, MaxIdleConnsPerHost: *workers, DisableCompression: true, Proxy: nil,
		},
	}
	due := make(chan string, 1<<16)
	var lock sync.Mutex
	done := make([][3]float64, 0, 1<<16)
	var group sync.WaitGroup
	for i := 0; i < *workers; i++ {
		group.Add(1)
		go func() {
			defer group.Done()
			for target := range due {
				started := time.Now()
				status := 0
				response, err := client.Get(*base + target)
				if err == nil {
					_, err = io.Copy(io.Discard, response.Body)
					response.Body.Close()
					if err == nil {
						status = response.StatusCode
					}
				}
				took := time.Since(started).Seconds()
				lock.Lock()
				done = append(done, [3]float64{float64(started.UnixNano()) / 1e9, took, float64(status)})
				lock.Unlock()
			}
		}()
	}
	stop := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	start := time.Now()
	interval := time.Duration(float64(time.Second) / *rate)
	sent := 0
	for running := true; running; {
		ahead := time.Until(start.Add(time.Duration(sent) * interval))
		if ahead > 0 {
			select {
			case <-stop:
				running = false
			case <-time.After(ahead):
			}
			continue
		}
		select {
		case <-stop:
			running = false
		default:
			due <- path(sent)
			sent++
		}
	}
	close(due)
	group.Wait()
	lock.Lock()
	defer lock.Unlock()
	out, _ := json.Marshal(map[string]any{"requests": done, "cpu_seconds": cpuSeconds()})
	os.Stdout.Write(append(out, '\n'))
}
