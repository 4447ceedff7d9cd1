// Run inside headless Chromium on a copy of an mlq report (tests/report.sh):
// checks what the browser parsed and laid out against the database's
// metrics (EXPECTED: [{run, key, epoch, value}], ROWS: rows evaluated) and
// appends a pre element, id mlq-check, that says "PASS ..." or "FAIL why".
(function () {
    const errs = [];
    let curves = 0, points = 0;
    const want = {};
    for (const m of EXPECTED) (want[m.run + '/' + m.key] = want[m.run + '/' + m.key] || []).push(m);

    const charts = document.querySelectorAll('svg.chart');
    if (charts.length < 3) errs.push('only ' + charts.length + ' charts');
    for (const svg of charts) {
        const r = svg.getBoundingClientRect();
        if (r.width < 300 || r.height < 150) errs.push(svg.id + ' laid out at ' + r.width + 'x' + r.height);
        if (!svg.querySelector('.legend .entry')) errs.push('no legend in ' + svg.id);
        const plot = svg.querySelector('g.plot');
        if (!plot) { errs.push('no plot in ' + svg.id); continue; }
        if (!plot.querySelector('.xaxis') || !plot.querySelector('.yaxis')) errs.push('no axes in ' + svg.id);
        if (plot.querySelectorAll('.xtick').length < 2) errs.push('x ticks in ' + svg.id);
        if (plot.querySelectorAll('.ytick').length < 2) errs.push('y ticks in ' + svg.id);
        if (!svg.querySelector('.xlabel').textContent) errs.push('no x label in ' + svg.id);
        if (!svg.querySelector('.ylabel').textContent) errs.push('no y label in ' + svg.id);
        const d = plot.dataset, log = d.log === '1';
        const x0 = +d.x0, x1 = +d.x1, L = +d.left, T = +d.top, W = +d.width, H = +d.height;
        const f = v => log ? Math.log10(v) : v;
        const y0 = f(+d.y0), y1 = f(+d.y1);
        // one decimal of a pixel, and a little more
        const tolX = 0.11 / W * (x1 - x0), tolY = 0.11 / H * (y1 - y0);
        for (const g of plot.querySelectorAll('g.curve:not(.faint)')) {
            const exp = (want[g.dataset.run + '/' + g.dataset.key] || [])
                .filter(m => m.value !== null && (!log || m.value > 0));
            const pts = [];
            for (const pl of g.querySelectorAll('polyline'))
                for (let i = 0; i < pl.points.numberOfItems; i++) pts.push(pl.points.getItem(i));
            if (pts.length !== exp.length) {
                errs.push(svg.id + ' run ' + g.dataset.run + ' ' + g.dataset.key + ': ' + pts.length +
                          ' points, database has ' + exp.length);
                continue;
            }
            pts.forEach((p, i) => {
                const epoch = x0 + (p.x - L) / W * (x1 - x0);
                const val = y0 + (T + H - p.y) / H * (y1 - y0);
                if (Math.abs(epoch - exp[i].epoch) > tolX || Math.abs(val - f(exp[i].value)) > tolY)
                    errs.push(svg.id + ' run ' + g.dataset.run + ' ' + g.dataset.key + ' point ' + i +
                              ' reads (' + epoch.toFixed(3) + ', ' + val + '), database (' +
                              exp[i].epoch + ', ' + exp[i].value + ')');
                points++;
            });
            const bb = g.getBBox();
            if (!(bb.width > 0 && bb.height >= 0)) errs.push(svg.id + ': curve not drawn');
            curves++;
        }
    }
    // The best epoch of every highlighted run's val_loss, where the database has its minimum.
    const loss = document.getElementById('chart-loss');
    const marks = loss ? loss.querySelectorAll('circle.best') : [];
    if (!marks.length) errs.push('no best epoch marked on chart-loss');
    for (const c of marks) {
        const exp = (want[c.dataset.run + '/val_loss'] || []).filter(m => m.value !== null);
        let best = null;
        for (const m of exp) if (!best || m.value < best.value) best = m;
        if (!best || +c.dataset.epoch !== best.epoch)
            errs.push('run ' + c.dataset.run + ' best marked at epoch ' + c.dataset.epoch +
                      ', database ' + (best && best.epoch));
    }
    // Confusion matrices: the counts shown sum to the rows evaluated.
    const cms = ROWS === null ? [] : document.querySelectorAll('svg.confusion');
    if (ROWS !== null && !cms.length) errs.push('no confusion matrix');
    for (const cm of cms) {
        let sum = 0, cells = 0;
        for (const t of cm.querySelectorAll('text.count')) { sum += +t.textContent; cells++; }
        const K = +cm.dataset.classes;
        if (cells !== K * K) errs.push('confusion matrix shows ' + cells + ' of ' + K * K + ' cells');
        if (sum !== ROWS) errs.push('confusion matrix sums to ' + sum + ', ' + ROWS + ' rows evaluated');
        if (cm.getBoundingClientRect().width < 100) errs.push('confusion matrix not laid out');
    }
    const per = document.querySelector('table.perclass');
    if (ROWS !== null && (!per || per.querySelectorAll('tbody tr').length < 2))
        errs.push('no per-class table');
    // A sweep's rungs: a dashed line on every curve chart.
    if (typeof RUNGS !== 'undefined')
        for (const svg of charts)
            if (svg.querySelectorAll('g.mark').length !== RUNGS)
                errs.push(svg.id + ': ' + svg.querySelectorAll('g.mark').length + ' rung marks, want ' + RUNGS);
    const par = document.querySelector('svg.parallel');
    if (!par || par.querySelectorAll('polyline.trial').length !== +par.dataset.lines)
        errs.push('parallel coordinates');
    if (curves === 0) errs.push('no curves');
    const out = document.createElement('pre');
    out.id = 'mlq-check';
    out.textContent = errs.length ? 'FAIL ' + errs.slice(0, 8).join('; ')
                                  : 'PASS ' + curves + ' curves, ' + points + ' points';
    document.body.appendChild(out);
})();
