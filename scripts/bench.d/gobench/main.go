// gobench: the Go client of scripts/bench. Go makes its own system calls, so only the kernel
// guard can socksify it. Per connection: net.Dial + write SIZE bytes + read them back (checked)
// + close, N times after W untimed ones; prints the line sfybench prints:
//
//	ok=N fail=F threads=1 secs=S us_per_op=U cpu_us_per_op=C
//
// With -c C: C connections at once, one goroutine each (the fan-out row), and then
//
//	ok=OK s=SECONDS
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

func cpu() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func op(addr string, i int, size int) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	out := bytes.Repeat([]byte{byte(i)}, size)
	if _, err := c.Write(out); err != nil {
		return err
	}
	in := make([]byte, size)
	if _, err := io.ReadFull(c, in); err != nil {
		return err
	}
	if !bytes.Equal(in, out) {
		return fmt.Errorf("echo differs")
	}
	return nil
}

func main() {
	ip := flag.String("a", "", "target IP")
	port := flag.Int("p", 0, "target port")
	n := flag.Int("n", 2000, "timed connections")
	w := flag.Int("W", 50, "untimed connections first")
	size := flag.Int("s", 32, "bytes echoed")
	fan := flag.Int("c", 0, "connections at once, one goroutine each (instead of -n in a row)")
	flag.Parse()
	addr := net.JoinHostPort(*ip, fmt.Sprint(*port))
	if *fan > 0 {
		t0 := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		ok := 0
		for i := 0; i < *fan; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				err := op(addr, i, *size)
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					ok++
				} else if i < 3 {
					fmt.Fprintln(os.Stderr, "connection", i, ":", err)
				}
			}(i)
		}
		wg.Wait()
		fmt.Printf("ok=%d s=%.3f\n", ok, time.Since(t0).Seconds())
		return
	}
	for i := 0; i < *w; i++ {
		if err := op(addr, i, *size); err != nil {
			fmt.Fprintln(os.Stderr, "warm-up:", err)
			os.Exit(1)
		}
	}
	c0, t0 := cpu(), time.Now()
	ok, fail := 0, 0
	for i := 0; i < *n; i++ {
		if err := op(addr, i, *size); err != nil {
			fail++
			if fail <= 3 {
				fmt.Fprintln(os.Stderr, "connection", i, ":", err)
			}
		} else {
			ok++
		}
	}
	secs := time.Since(t0).Seconds()
	c := cpu() - c0
	fmt.Printf("ok=%d fail=%d threads=1 secs=%.6f us_per_op=%.3f cpu_us_per_op=%.3f\n", ok, fail, secs,
		secs*1e6/float64(*n), c*1e6/float64(*n))
	if fail > 0 {
		os.Exit(1)
	}
}
