package bench

import (
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// WriteText prints the summaries and the ratios as tables.
func (rep *Report) WriteText(w io.Writer) {
	procs := ""
	if n := rep.Options.ApplianceProcs; n > 0 {
		procs = fmt.Sprintf("; appliance at GOMAXPROCS=%d", n)
	}
	fmt.Fprintf(w, "edgegate-bench, %s, %s; median of %d runs (min–max)%s\n\n", rep.Started.Format(time.DateTime), rep.Machine, rep.Options.Runs, procs)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tcontrollers\tmsg/s\tmin–max\tp50\tp99\tp99.9\tsock p50\tsock p99\town p50\town p99\trun wait\tlock waiters\tCPU cores\tRSS MiB\t")
	for _, s := range rep.Summaries {
		cpu, rss := "—", "—"
		if s.CPU >= 0 {
			cpu = fmt.Sprintf("%.2f", s.CPU)
		}
		if s.RSS >= 0 {
			rss = fmt.Sprintf("%.0f", float64(s.RSS)/(1<<20))
		}
		lat := func(d time.Duration) string {
			if d == 0 {
				return "—"
			}
			return d.Round(time.Microsecond).String()
		}
		waiters := "—"
		if s.RunWait > 0 {
			waiters = fmt.Sprintf("%.1f", s.LockWaiters)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f–%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", s.Scenario, s.Controllers, s.Rate, s.RateMin, s.RateMax,
			lat(s.P50), lat(s.P99), lat(s.P999), lat(s.SockP50), lat(s.SockP99), lat(s.OwnP50), lat(s.OwnP99), lat(s.RunWait), waiters, cpu, rss)
	}
	tw.Flush()
	if len(rep.Ratios) > 0 {
		fmt.Fprintln(w, "\nratios (median over median)")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, r := range rep.Ratios {
			fmt.Fprintf(tw, "%s\t%d controllers\t%.2f×\n", r.Name, r.Controllers, r.Value)
		}
		tw.Flush()
	}
	if len(rep.Failures) > 0 {
		fmt.Fprintln(w, "\nFAILED runs (left out of the figures)")
		for _, f := range rep.Failures {
			fmt.Fprintln(w, "  "+f)
		}
	}
	notes := map[string]string{}
	for _, s := range rep.Summaries {
		if s.Note != "" {
			k := s.Scenario
			if strings.Contains(k, "@") { // measured at more than one count
				k = fmt.Sprintf("%s, %d controllers", k, s.Controllers)
			}
			notes[k] = s.Note
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(w, "\nnotes")
		keys := make([]string, 0, len(notes))
		for k := range notes {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "  %s: %s\n", k, notes[k])
		}
	}
}

// WriteChart draws throughput and p99 ACK latency against the number of
// controllers, one line per scenario (ceilings left out), to path (.svg or
// .png).
func (rep *Report) WriteChart(path string) error {
	series := map[string]plotter.XYs{}
	lats := map[string]plotter.XYs{}
	var names []string
	for _, s := range rep.Summaries {
		if strings.HasPrefix(s.Scenario, "ceiling/") || strings.Contains(s.Scenario, "@") {
			continue
		}
		if _, ok := series[s.Scenario]; !ok {
			names = append(names, s.Scenario)
		}
		series[s.Scenario] = append(series[s.Scenario], plotter.XY{X: float64(s.Controllers), Y: s.Rate})
		if s.P99 > 0 {
			lats[s.Scenario] = append(lats[s.Scenario], plotter.XY{X: float64(s.Controllers), Y: float64(s.P99) / float64(time.Millisecond)})
		}
	}
	if len(names) == 0 {
		return fmt.Errorf("bench: chart: nothing to draw")
	}
	tp := newLogPlot("Throughput", "messages/s")
	lp := newLogPlot("ACK latency p99", "ms")
	for i, n := range names {
		for _, x := range []struct {
			p   *plot.Plot
			xys plotter.XYs
		}{{tp, series[n]}, {lp, lats[n]}} {
			if len(x.xys) == 0 {
				continue
			}
			sort.Slice(x.xys, func(a, b int) bool { return x.xys[a].X < x.xys[b].X })
			l, pts, err := plotter.NewLinePoints(x.xys)
			if err != nil {
				return err
			}
			l.Color, pts.Color = plotutil.Color(i), plotutil.Color(i)
			l.Dashes = plotutil.Dashes(i)
			pts.Shape = plotutil.Shape(i)
			x.p.Add(l, pts)
			x.p.Legend.Add(n, l, pts)
		}
	}
	const w, h = 22 * vg.Centimeter, 12 * vg.Centimeter
	var canvas vg.CanvasWriterTo
	switch strings.ToLower(filepath.Ext(path)) {
	case ".svg":
		canvas = vgsvg.New(w, 2*h)
	case ".png":
		canvas = vgimg.PngCanvas{Canvas: vgimg.New(w, 2*h)}
	default:
		return fmt.Errorf("bench: chart %s: want .svg or .png", path)
	}
	dc := draw.New(canvas)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadY: vg.Centimeter}
	plots := [][]*plot.Plot{{tp}, {lp}}
	canvases := plot.Align(plots, tiles, dc)
	tp.Draw(canvases[0][0])
	lp.Draw(canvases[1][0])
	return writeTo(path, canvas)
}

func newLogPlot(title, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "controllers"
	p.Y.Label.Text = y
	p.X.Scale, p.X.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
	p.Y.Scale, p.Y.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	return p
}
