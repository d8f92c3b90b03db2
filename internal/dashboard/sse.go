package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/minuted/minuted/internal/call"
)

// Views of the event stream.
const (
	ViewOverview = "overview"
	ViewProject  = "project"
	ViewSystem   = "system"
)

// streamWriteTimeout bounds each write of the event stream (the server's
// WriteTimeout would otherwise end it).
const streamWriteTimeout = 10 * time.Second

// StreamQuery is what an event stream shows.
type StreamQuery struct {
	View    string
	Project string
}

// ParseStreamQuery reads ?view=&project= of GET /ui/api/events.
func ParseStreamQuery(view, project string) (StreamQuery, error) {
	switch view {
	case "", ViewOverview:
		if project != "" {
			return StreamQuery{}, fmt.Errorf("query parameter project is only for view=project")
		}
		return StreamQuery{View: ViewOverview}, nil
	case ViewSystem:
		if project != "" {
			return StreamQuery{}, fmt.Errorf("query parameter project is only for view=project")
		}
		return StreamQuery{View: ViewSystem}, nil
	case ViewProject:
		if !call.ValidProject(project) {
			return StreamQuery{}, fmt.Errorf("query parameter project=%q: %v", project, call.ErrBadProject)
		}
		return StreamQuery{View: ViewProject, Project: project}, nil
	}
	return StreamQuery{}, fmt.Errorf("query parameter view=%q must be overview, project or system", view)
}

// events streams one event named after the view every Interval until the
// client leaves. A failed read is sent as an "error" event and the stream
// goes on (Redis may come back).
func (h *Handler) events(w http.ResponseWriter, r *http.Request) {
	q, err := ParseStreamQuery(r.URL.Query().Get("view"), r.URL.Query().Get("project"))
	if err != nil {
		fail(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx := r.Context()
	read := func(ctx context.Context) (any, error) {
		switch q.View {
		case ViewProject:
			return h.Project(ctx, q.Project, Range{}, false)
		case ViewSystem:
			return h.System(ctx)
		}
		return h.Overview(ctx)
	}
	first, err := read(ctx)
	if err != nil {
		h.failErr(w, r, q.Project, err)
		return
	}
	rc := http.NewResponseController(w)
	// No read deadline either: the stream lasts as long as the client (each
	// write below has its own deadline instead of the server's WriteTimeout).
	_ = rc.SetReadDeadline(time.Time{})
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	var buf bytes.Buffer
	send := func(v any, err error) error {
		buf.Reset()
		name := q.View
		if err != nil {
			name, v = "error", map[string]string{"error": err.Error()}
		}
		b, merr := json.Marshal(v)
		if merr != nil {
			return merr
		}
		fmt.Fprintf(&buf, "event: %s\ndata: %s\n\n", name, b)
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		if _, err := w.Write(buf.Bytes()); err != nil {
			return err
		}
		return rc.Flush()
	}
	if err := send(first, nil); err != nil {
		return
	}
	t := time.NewTicker(h.o.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		v, err := read(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			h.log.Warn("dashboard event stream: read failed", "view", q.View, "project", q.Project, "err", err)
		}
		if err := send(v, err); err != nil {
			return
		}
	}
}
