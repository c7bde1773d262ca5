$ours_none << EOD
1 507.3 310
2 1027.4 975
4 1005.1 2741
8 979.1 8537
16 1148.6 15185
32 1121.2 24199
EOD
$ours_uid << EOD
1 473.9 386
2 764.4 1287
4 883.0 3078
8 842.7 8246
16 808.5 17820
32 839.3 19880
EOD
$ours_pid << EOD
1 392.4 926
2 626.5 1814
4 673.2 4442
8 811.3 10322
16 972.4 12533
32 861.3 29855
EOD
$lttng_none << EOD
1 171.9 NaN
2 287.5 NaN
4 312.4 NaN
8 302.0 NaN
16 327.7 NaN
32 316.8 NaN
EOD
$lttng_uid << EOD
1 143.2 NaN
2 197.5 NaN
4 209.7 NaN
8 215.3 NaN
16 208.6 NaN
32 200.8 NaN
EOD
$lttng_pid << EOD
1 7.2 NaN
2 6.1 NaN
4 6.7 NaN
8 7.0 NaN
16 6.0 NaN
32 6.0 NaN
EOD
set terminal pngcairo size 1200,520 noenhanced
set output 'docs/churn.png'
set multiplot layout 1,2 title 'ustrace bench churn: short-lived apps, 2-core machine'
set logscale x 2
set xlabel 'PAR (apps launched at once)'
set key below
set grid
set ylabel 'apps/s'
set logscale y 10
plot $ours_none using 1:2 with linespoints lw 2 lc rgb '#555555' dt 1 pt 7 title 'ours none (200 apps)', $ours_uid using 1:2 with linespoints lw 2 lc rgb '#1f77b4' dt 1 pt 7 title 'ours uid (200 apps)', $ours_pid using 1:2 with linespoints lw 2 lc rgb '#d62728' dt 1 pt 7 title 'ours pid (200 apps)', $lttng_none using 1:2 with linespoints lw 2 lc rgb '#555555' dt 2 pt 6 title 'lttng none (200 apps)', $lttng_uid using 1:2 with linespoints lw 2 lc rgb '#1f77b4' dt 2 pt 6 title 'lttng uid (200 apps)', $lttng_pid using 1:2 with linespoints lw 2 lc rgb '#d62728' dt 2 pt 6 title 'lttng pid (40 apps)'
set ylabel 'p99 registration latency, app-measured (us)'
plot $ours_none using 1:3 with linespoints lw 2 lc rgb '#555555' dt 1 pt 7 title 'ours none (200 apps)', $ours_uid using 1:3 with linespoints lw 2 lc rgb '#1f77b4' dt 1 pt 7 title 'ours uid (200 apps)', $ours_pid using 1:3 with linespoints lw 2 lc rgb '#d62728' dt 1 pt 7 title 'ours pid (200 apps)'
unset multiplot
