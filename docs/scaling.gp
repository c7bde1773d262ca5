# gnuplot -c docs/scaling.gp: docs/scaling.png from docs/scaling.csv
# (scripts/c-thread-scaling.sh EVENTS ROUNDS docs/scaling.csv) and docs/per-app-cpu.csv
# (apps,us: `ustrace bench churn --apps N --par 4 --mode pid`, its daemon CPU per app).
set terminal pngcairo size 1200,480 noenhanced
set output 'docs/scaling.png'
set datafile separator ','
set key top left
set grid
set multiplot layout 1,2 title 'How cost grows, 2-core machine'
set logscale x 2
set xlabel 'producer threads (one process, per-UID rings, one per CPU)'
set ylabel 'events/s, best of the rounds (millions)'
set yrange [0:*]
plot 'docs/scaling.csv' every ::1 using 1:($2/1e6) with linespoints lw 2 pt 7 lc rgb '#d62728' title 'ustrace', \
     'docs/scaling.csv' every ::1 using 1:($3/1e6) with linespoints lw 2 pt 6 dt 2 lc rgb '#1f77b4' title 'LTTng-UST 2.13'
set logscale x 10
set xrange [500:100000]
set yrange [0:400]
set key bottom right
set xlabel 'per-PID apps (PAR 4, one event each)'
set ylabel 'daemon CPU per app (us)'
plot 'docs/per-app-cpu.csv' every ::1 using 1:2 with linespoints lw 2 pt 7 lc rgb '#d62728' title 'ustrace'
unset multiplot
